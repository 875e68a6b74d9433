"""Listeners (TCP v4/v6, Unix, several at once, stale socket files) and start-up failures."""

import os
import socket

from harness import free_port


def serves(d, which, upstream):
    c = d.client(which)
    r = c.get("/healthz")
    assert r.status == 200, (which, r.status)
    bs = c.batch([upstream.url("/ok")])
    assert bs[0]["status"] == 200
    return bs


def one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1, "expected one line on stderr, got %r" % text
    return lines[0]


def test_unix_listener(daemon, upstream):
    d = daemon()
    assert d.listen[0].startswith("unix:")
    serves(d, 0, upstream)
    assert upstream.count("/ok") == 1


def test_tcp_ipv4_listener(daemon, upstream):
    d = daemon(listen="127.0.0.1:%d" % free_port())
    serves(d, 0, upstream)


def test_tcp_ipv6_listener(daemon, upstream):
    d = daemon(listen="[::1]:%d" % free_port(socket.AF_INET6, "::1"))
    serves(d, 0, upstream)


def test_several_listeners_at_once(daemon, upstream, sockdir):
    workdir = sockdir
    listen = ["unix:%s/a.sock" % workdir, "127.0.0.1:%d" % free_port(),
              "[::1]:%d" % free_port(socket.AF_INET6, "::1"), "unix:%s/b.sock" % workdir]
    d = daemon(listen=listen)
    for i in range(len(listen)):
        serves(d, i, upstream)
    assert upstream.count("/ok") == 4


def test_command_line_listen_overrides_file(daemon, upstream):
    port = free_port()
    d = daemon(args=["-l", "127.0.0.1:%d" % port])
    assert d.listen == ["127.0.0.1:%d" % port]
    serves(d, 0, upstream)
    assert not os.path.exists(os.path.join(d.dir, "s.sock")), "the file's unix listener was bound anyway"


def test_stale_unix_socket_file_is_replaced(daemon, upstream, sockdir):
    path = os.path.join(sockdir, "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # the file stays, nobody listens: what a crashed daemon leaves behind
    assert os.path.exists(path)
    d = daemon(listen="unix:" + path)
    serves(d, 0, upstream)


def test_port_in_use_exits_2_with_one_line(fanoutd):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        p = fanoutd(["-l", "127.0.0.1:%d" % port])
    finally:
        holder.close()
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert str(port) in one_line(p.stderr)


def test_unix_path_in_missing_directory_exits_2(fanoutd):
    p = fanoutd(["-l", "unix:/nonexistent-fanoutd-dir/x.sock"])
    assert p.returncode == 2, (p.returncode, p.stderr)
    one_line(p.stderr)


def test_ipv6_listener_on_address_not_here_exits_2(fanoutd):
    p = fanoutd(["-l", "[2001:db8::1]:%d" % free_port()])
    assert p.returncode == 2, (p.returncode, p.stderr)
    one_line(p.stderr)


def test_bad_listen_arguments_exit_2(fanoutd):
    for bad in ["999.1.1.1:8080", "127.0.0.1:notaport", "127.0.0.1:70000", "127.0.0.1", "[::1:80", "unix:"]:
        p = fanoutd(["-l", bad])
        assert p.returncode == 2, (bad, p.returncode, p.stderr)
        one_line(p.stderr)


def test_bad_listen_line_in_file_names_file_and_line(fanoutd):
    p = fanoutd([], config="# comment\nlisten = 999.1.1.1:8080\n")
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "fanoutd.conf:2:" in one_line(p.stderr)


def test_check_flag(fanoutd):
    p = fanoutd(["-t"], config={"listen": "127.0.0.1:%d" % free_port(), "max_header_bytes": 4096,
                                "output_buffer_bytes": 65536, "dns_cache_size": 100})
    assert (p.returncode, p.stdout.strip()) == (0, "configuration ok"), p.stderr
    p = fanoutd(["-t"], config="concurrency = 4\nno_such_key = 1\nper_host = zero\n")
    assert p.returncode == 2
    errs = p.stderr.strip().splitlines()
    assert any("fanoutd.conf:2:" in l for l in errs) and any("fanoutd.conf:3:" in l for l in errs), errs


def test_unknown_flag_exits_2(fanoutd):
    p = fanoutd(["-Z"])
    assert p.returncode == 2
    one_line(p.stderr)


def test_help_and_version_exit_0(fanoutd):
    assert fanoutd(["-h"]).returncode == 0
    v = fanoutd(["-V"])
    assert v.returncode == 0 and v.stdout.strip()
