"""Name resolution through dns_server (the test dnsmasq), counted in dnsmasq's query log.

The daemon asks for A first and for AAAA only when a name has no A record."""


def test_name_resolved_through_dns_server(daemon, upstream, dns):
    d = daemon()
    url = upstream.url("/echo", host="a.test")
    bs = d.batch([url])
    r = bs[0]
    assert r["status"] == 200 and r["url"] == url
    assert r["remote"] == "127.0.0.1:%d" % upstream.port
    assert upstream.reqs()[0].header_all("Host") == ["a.test:%d" % upstream.port]
    assert dns.queries("a.test") == [("A", "a.test")]


def test_thousand_requests_one_query(daemon, upstream, dns):
    d = daemon()
    bs = d.batch([upstream.url("/ok?i=%d" % i, host="a.test") for i in range(1000)], {"concurrency": 64})
    assert bs.summary["responses"] == 1000
    assert upstream.count() == 1000
    assert dns.count("a.test") == 1


def test_cache_shared_across_batches(daemon, upstream, dns):
    d = daemon()
    for i in range(3):
        assert d.batch([upstream.url("/ok?close=1&b=%d" % i, host="b.test")])[0]["status"] == 200
    assert upstream.stats()["connections"] == 3  # each batch needed an address
    assert dns.count("b.test") == 1
    bs = d.batch([upstream.url("/ok?close=1", host="b.test")])
    assert bs[0]["timing"]["dns_ms"] == 0 and bs[0]["reused"] is False  # from the cache


def test_two_names_two_queries(daemon, upstream, dns):
    d = daemon()
    bs = d.batch([upstream.url("/ok?i=%d" % i, host=h) for i in range(10) for h in ("a.test", "c.test")])
    assert bs.summary["responses"] == 20
    assert dns.count("a.test") == 1 and dns.count("c.test") == 1


def test_unknown_name_is_a_dns_error(daemon, upstream, dns):
    d = daemon()
    bs = d.batch(["http://nx-one.test:%d/ok" % upstream.port, upstream.url("/ok")])
    assert bs[0]["error"]["kind"] == "dns"
    assert bs[1]["status"] == 200
    assert upstream.count() == 1
    assert 1 <= dns.count("nx-one.test") <= 2


def test_negative_answer_is_cached(daemon, upstream, dns):
    d = daemon(dns_negative_ttl_s=30)
    url = "http://nx-two.test:%d/ok" % upstream.port
    first = d.batch([url + "?i=%d" % i for i in range(5)])
    assert first.kinds() == ["dns"] * 5
    n = dns.count("nx-two.test")
    assert 1 <= n <= 2  # A, and perhaps AAAA; once for five requests
    second = d.batch([url])
    assert second.kinds() == ["dns"]
    assert dns.count("nx-two.test") == n
    assert upstream.stats()["connections"] == 0


def test_name_with_only_an_aaaa_record(daemon, upstreams, dns):
    (up,) = upstreams(1, host="::1")
    d = daemon()
    bs = d.batch(["http://v6.test:%d/ok" % up.port])
    assert bs[0]["status"] == 200, bs[0]
    assert bs[0]["remote"] == "[::1]:%d" % up.port
    assert dns.queries("v6.test") == [("A", "v6.test"), ("AAAA", "v6.test")]


def test_ip_literals_need_no_dns(daemon, upstreams, dns):
    (v4,) = upstreams(1)
    (v6,) = upstreams(1, host="::1")
    d = daemon()
    bs = d.batch([v4.url("/ok"), v6.url("/ok")])
    assert bs.summary["responses"] == 2
    assert bs[1]["remote"] == "[::1]:%d" % v6.port
    assert v6.reqs()[0].header_all("Host") == ["[::1]:%d" % v6.port]
    assert dns.queries() == []


def test_dns_cache_size_bounds_the_cache(daemon, upstream, dns):
    # close=1: no kept-alive connection lets the daemon skip the lookup.
    d = daemon(dns_cache_size=1)
    for host in ("a.test", "b.test", "a.test"):
        assert d.batch([upstream.url("/ok?close=1", host=host)])[0]["status"] == 200
    assert dns.count("a.test") == 2 and dns.count("b.test") == 1


def test_every_address_of_a_name_is_checked_against_the_policy(daemon, upstream, dns):
    # mixed.test is 127.0.0.1 and 127.0.0.2, in an order dnsmasq rotates per answer;
    # with no caching each batch resolves anew, so some answers list the allowed
    # address first. Every one must be refused whole, and 127.0.0.1 never reached.
    d = daemon(deny="127.0.0.2/32", dns_min_ttl_s=0, dns_max_ttl_s=0)
    for i in range(4):
        bs = d.batch(["http://mixed.test:%d/ok?i=%d" % (upstream.port, i)])
        assert bs.kinds() == ["blocked"], bs[0]
        assert "127.0.0.2" in bs[0]["error"]["message"]
    assert dns.count("mixed.test", types=("A",)) == 4
    assert upstream.stats()["connections"] == 0
