/* fanout.c: the command people type. It sends one batch to fanoutd and
 * prints the results as they stream back.
 *
 * URLs from arguments, a file or standard input go out as a streamed batch
 * (NDJSON lines, chunked) while they are read, and results are printed as
 * they arrive, so a list of any length starts at once and memory does not
 * depend on its length: input is read only while less than FO_OUT_MAX
 * waits to be written to the daemon, and each result is handled and let
 * go as its line completes. One libevent loop does both directions; the
 * daemon's answer is read by the daemon's own strict HTTP/1.1 reader
 * (h1.c). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "h1.h"
#include "jscan.h"
#include "util.h"	/* FANOUTD_VERSION */

#define FO_DEFAULT_UNIX "/run/fanoutd/fanoutd.sock"
#define FO_DEFAULT_TCP "127.0.0.1:8750"
#define FO_OUT_MAX (256 * 1024)		/* upload bytes waiting for the daemon before input waits */
#define FO_READ_CHUNK (64 * 1024)	/* input read per turn */
#define FO_LINE_MAX (16 * 1024 * 1024)	/* one URL line, one result line */
#define FO_HEAD_MAX (64 * 1024)
#define FO_PROGRESS_US 100000		/* progress line refresh */
#define FO_FLUSH_US 2000		/* the longest a result waits in stdout's buffer */

enum { EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_UNREACHABLE };

static struct {
	/* What to send. */
	json_t *opts;			/* the options line */
	const char *method;		/* -X, or POST implied by -d/--json */
	const char *data;		/* -d */
	json_t *json;			/* --json */
	int batch_doc;			/* --batch */
	const char *input_path;		/* -i */
	char **urls;			/* arguments */
	int nurls;
	const char *connect;
	const char *outdir;
	int fail;
	int quiet, verbose;
	int body_implied;		/* -o asked for base64: a document's choice wins */

	/* The connection. */
	struct event_base *base;
	struct bufferevent *bev;
	char where[PATH_MAX + 8];

	/* Input. */
	int in_fd;
	int in_regular;			/* a file: always readable, read a chunk a turn */
	struct event *in_ev;
	struct evbuffer *in_buf;	/* a partial line */
	struct evbuffer *pend;		/* request lines not yet sent */
	int in_done;
	int in_paused;

	/* The answer. */
	struct h1_head head;
	int have_head;
	struct h1_body body;
	struct evbuffer *lines;		/* its body, transfer coding removed */
	struct evbuffer *refusal;	/* a non-200 answer's body */
	int finished;

	/* Output and counts. */
	int tty_out, tty_err;
	size_t sent, done, responses, errors, failed_status;
	size_t kinds[16];
	const char *kind_names[16];
	size_t nkinds;
	uint64_t t_start, t_progress, t_flushed;
	int unflushed;			/* a result or the summary is in stdout's buffer */
	struct event *flush_ev;		/* a flush held back by FO_FLUSH_US */
	int incomplete;			/* the summary said complete: false */
} fo;

static void fo_read_input(void);

static uint64_t
fo_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void fo_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

static void
fo_die(int code, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);		/* the results before the message, with 2>&1 */
	if (fo.tty_err && fo.t_progress != 0)
		fputs("\r\033[K", stderr);
	fputs("fanout: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

static void
fo_usage(FILE *f)
{
	fprintf(f,
	    "usage: fanout [OPTIONS] [URL...]\n"
	    "  URLs from the arguments, or one per line from -i FILE or standard input\n"
	    "  ('#' starts a comment); results as NDJSON on standard output, or readable\n"
	    "  lines when it is a terminal.\n"
	    "  -i FILE           read URLs (with --batch, a batch document) from FILE; - is stdin\n"
	    "  --batch           the input is a batch document (JSON), sent as it is\n"
	    "  -X METHOD         method of every request\n"
	    "  -H 'Name: value'  a header for every request (repeatable)\n"
	    "  -d DATA           a body for every request (POST unless -X says otherwise)\n"
	    "  --json DATA       a JSON body for every request (likewise)\n"
	    "  -c N              concurrency           -p N   per_host\n"
	    "  -t MS             timeout_ms            --deadline MS   deadline_ms\n"
	    "  -r N              retries               --rate R        rate_per_host\n"
	    "  --burst N         rate_burst            --redirects N   follow_redirects\n"
	    "  --connect-timeout MS                    --max-body BYTES\n"
	    "  --body auto|text|base64|json|none       --order completion|input\n"
	    "  --no-headers      no response headers   --no-http2      HTTP/1.1 only\n"
	    "  -o DIR            each body to DIR/<index> (or <id>); results without bodies\n"
	    "  --connect ADDR    the daemon: unix:/path or HOST:PORT (default: $FANOUTD,\n"
	    "                    then unix:" FO_DEFAULT_UNIX ", then " FO_DEFAULT_TCP ")\n"
	    "  --fail            exit 1 also when a response has status >= 400\n"
	    "  -q  quiet (no progress)   -v  verbose   -h  help   -V  version\n"
	    "exit status: 0 every request got a response, 1 some got an error, 2 usage or\n"
	    "a batch the daemon refused, 3 the daemon cannot be reached\n");
}

/*
 * Options.
 */

static long long
fo_int(const char *flag, const char *v, long long min, long long max)
{
	char *end;
	long long n;

	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || n < min || n > max)
		fo_die(EXIT_USAGE, "%s: \"%s\" is not a whole number between %lld and %lld", flag, v,
		    min, max);
	return n;
}

static void
fo_opt_int(const char *name, const char *flag, const char *v, long long min, long long max)
{
	json_object_set_new(fo.opts, name, json_integer(fo_int(flag, v, min, max)));
}

static void
fo_opt_header(const char *h)
{
	const char *colon = strchr(h, ':');
	json_t *headers = json_object_get(fo.opts, "headers");
	char *name;

	if (colon == NULL || colon == h)
		fo_die(EXIT_USAGE, "-H: \"%s\" is not \"Name: value\"", h);
	name = strndup(h, (size_t)(colon - h));
	for (colon++; *colon == ' ' || *colon == '\t'; colon++)
		;
	if (headers == NULL) {
		headers = json_object();
		json_object_set_new(fo.opts, "headers", headers);
	}
	json_object_set_new(headers, name, json_string(colon));
	free(name);
}

enum {
	O_BATCH = 256, O_JSON, O_DEADLINE, O_RATE, O_BURST, O_REDIRECTS, O_CONNECT_TIMEOUT,
	O_MAX_BODY, O_BODY, O_ORDER, O_NO_HEADERS, O_NO_HTTP2, O_CONNECT, O_FAIL,
};

static const struct option fo_longopts[] = {
	{ "batch", no_argument, NULL, O_BATCH },
	{ "json", required_argument, NULL, O_JSON },
	{ "deadline", required_argument, NULL, O_DEADLINE },
	{ "rate", required_argument, NULL, O_RATE },
	{ "burst", required_argument, NULL, O_BURST },
	{ "redirects", required_argument, NULL, O_REDIRECTS },
	{ "connect-timeout", required_argument, NULL, O_CONNECT_TIMEOUT },
	{ "max-body", required_argument, NULL, O_MAX_BODY },
	{ "body", required_argument, NULL, O_BODY },
	{ "order", required_argument, NULL, O_ORDER },
	{ "no-headers", no_argument, NULL, O_NO_HEADERS },
	{ "no-http2", no_argument, NULL, O_NO_HTTP2 },
	{ "connect", required_argument, NULL, O_CONNECT },
	{ "fail", no_argument, NULL, O_FAIL },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

static void
fo_opt_rate(const char *v)
{
	char *end;
	double r = strtod(v, &end);

	if (end == v || *end != '\0' || !(r > 0) || r > 1e6)
		fo_die(EXIT_USAGE, "--rate: \"%s\" is not a number above 0 and at most 1000000", v);
	json_object_set_new(fo.opts, "rate_per_host", json_real(r));
}

static void
fo_opt_choice(const char *name, const char *flag, const char *v, const char *const *ok)
{
	for (; *ok != NULL; ok++) {
		if (strcmp(v, *ok) == 0) {
			json_object_set_new(fo.opts, name, json_string(v));
			return;
		}
	}
	fo_die(EXIT_USAGE, "%s: \"%s\" is not one of the choices (fanout -h)", flag, v);
}

static void
fo_options(int argc, char **argv)
{
	static const char *const bodies[] = { "auto", "text", "base64", "json", "none", NULL };
	static const char *const orders[] = { "completion", "input", NULL };
	json_error_t err;
	int ch;

	fo.opts = json_object();
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":i:X:H:d:c:p:t:r:o:qvhV", fo_longopts, NULL)) != -1) {
		switch (ch) {
		case 'i': fo.input_path = optarg; break;
		case O_BATCH: fo.batch_doc = 1; break;
		case 'X': fo.method = optarg; break;
		case 'H': fo_opt_header(optarg); break;
		case 'd': fo.data = optarg; break;
		case O_JSON:
			if ((fo.json = json_loads(optarg, JSON_DECODE_ANY, &err)) == NULL)
				fo_die(EXIT_USAGE, "--json: not JSON: %s", err.text);
			break;
		case 'c': fo_opt_int("concurrency", "-c", optarg, 1, 65536); break;
		case 'p': fo_opt_int("per_host", "-p", optarg, 1, 65536); break;
		case 't': fo_opt_int("timeout_ms", "-t", optarg, 1, 3600000); break;
		case O_DEADLINE: fo_opt_int("deadline_ms", "--deadline", optarg, 0, 86400000); break;
		case 'r': fo_opt_int("retries", "-r", optarg, 0, 10); break;
		case O_RATE: fo_opt_rate(optarg); break;
		case O_BURST: fo_opt_int("rate_burst", "--burst", optarg, 1, 1000000); break;
		case O_REDIRECTS: fo_opt_int("follow_redirects", "--redirects", optarg, 0, 20); break;
		case O_CONNECT_TIMEOUT:
			fo_opt_int("connect_timeout_ms", "--connect-timeout", optarg, 1, 3600000);
			break;
		case O_MAX_BODY: fo_opt_int("max_body_bytes", "--max-body", optarg, 0, 1LL << 30); break;
		case O_BODY: fo_opt_choice("body", "--body", optarg, bodies); break;
		case O_ORDER: fo_opt_choice("order", "--order", optarg, orders); break;
		case O_NO_HEADERS: json_object_set_new(fo.opts, "include_headers", json_false()); break;
		case O_NO_HTTP2: json_object_set_new(fo.opts, "http2", json_false()); break;
		case 'o': fo.outdir = optarg; break;
		case O_CONNECT: fo.connect = optarg; break;
		case O_FAIL: fo.fail = 1; break;
		case 'q': fo.quiet = 1; break;
		case 'v': fo.verbose = 1; break;
		case 'h': fo_usage(stdout); exit(EXIT_OK);
		case 'V': printf("fanout %s\n", FANOUTD_VERSION); exit(EXIT_OK);
		case ':': fo_die(EXIT_USAGE, "%s needs an argument (fanout -h)", argv[optind - 1]);
		default: fo_die(EXIT_USAGE, "unknown option %s (fanout -h)", argv[optind - 1]);
		}
	}
	fo.urls = argv + optind;
	fo.nurls = argc - optind;
	if (fo.data != NULL && fo.json != NULL)
		fo_die(EXIT_USAGE, "-d and --json cannot both be given");
	if ((fo.data != NULL || fo.json != NULL) && fo.method == NULL)
		fo.method = "POST";	/* as curl does */
	if (fo.nurls > 0 && fo.input_path != NULL)
		fo_die(EXIT_USAGE, "URLs come from the arguments or from -i, not both");
	if (fo.batch_doc && fo.nurls > 0)
		fo_die(EXIT_USAGE, "--batch reads a document from -i or standard input, not URLs");
	if (fo.batch_doc && (fo.method != NULL || fo.data != NULL || fo.json != NULL))
		fo_die(EXIT_USAGE, "-X, -d and --json apply to a list of URLs; a --batch document "
		    "says each request's own");
	if (fo.outdir != NULL) {
		/* Bodies as exact bytes; each goes to its file, not to stdout. */
		if (json_object_get(fo.opts, "body") == NULL) {
			json_object_set_new(fo.opts, "body", json_string("base64"));
			fo.body_implied = 1;
		}
		if (mkdir(fo.outdir, 0777) < 0 && errno != EEXIST)
			fo_die(EXIT_USAGE, "-o %s: %s", fo.outdir, strerror(errno));
	}
}

/*
 * The daemon's address.
 */

/* Connects to "unix:/path" or "HOST:PORT"; -1 with errno. */
static int
fo_dial(const char *addr)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss), fd;

	memset(&ss, 0, sizeof(ss));
	if (strncmp(addr, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
		if (strlen(addr + 5) >= sizeof(sun->sun_path)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, addr + 5);
		len = sizeof(*sun);
	} else if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss, &len) < 0) {
		errno = EINVAL;
		return -1;
	}
	if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&ss, (socklen_t)len) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* --connect, then $FANOUTD, then the packaged socket, then the default TCP
 * port: the first one given is the only one tried. */
static int
fo_reach(void)
{
	const char *env = getenv("FANOUTD"), *addr = fo.connect;
	int fd;

	if (addr == NULL && env != NULL && *env != '\0')
		addr = env;
	char tried[PATH_MAX + 64] = "";

	if (addr == NULL) {
		snprintf(fo.where, sizeof(fo.where), "unix:%s", FO_DEFAULT_UNIX);
		if ((fd = fo_dial(fo.where)) >= 0)
			return fd;
		snprintf(tried, sizeof(tried), " (nor at %s: %s)", fo.where, strerror(errno));
		addr = FO_DEFAULT_TCP;
	}
	snprintf(fo.where, sizeof(fo.where), "%s", addr);
	if ((fd = fo_dial(addr)) >= 0)
		return fd;
	fo_die(EXIT_UNREACHABLE, "cannot reach fanoutd at %s: %s%s\n"
	    "  start it (systemctl start fanoutd.socket, or fanoutd -l %s), or say where it\n"
	    "  listens with --connect ADDR or FANOUTD=ADDR (unix:/path or HOST:PORT)",
	    addr, errno == EINVAL ? "not unix:/path or HOST:PORT" : strerror(errno), tried,
	    strncmp(addr, "unix:", 5) == 0 || strchr(addr, ':') != NULL ? addr : FO_DEFAULT_TCP);
}

/*
 * Sending.
 */

static struct evbuffer *
fo_out(void)
{
	return bufferevent_get_output(fo.bev);
}

/* The lines taken since the last flush go out as one chunk of the upload:
 * a chunk a line cost the daemon a chunk header each. */
static void
fo_flush_lines(void)
{
	size_t n = evbuffer_get_length(fo.pend);

	if (n == 0)
		return;
	evbuffer_add_printf(fo_out(), "%zx\r\n", n);
	evbuffer_add_buffer(fo_out(), fo.pend);
	evbuffer_add(fo_out(), "\r\n", 2);
}

static void
fo_send_json_line(json_t *v)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

	evbuffer_add(fo.pend, s, strlen(s));
	evbuffer_add(fo.pend, "\n", 1);
	free(s);
}

/* One URL: a string, or an object when every request has a method or body. */
static void
fo_send_url(const char *url, size_t len)
{
	json_t *r = json_stringn(url, len);

	if (r == NULL)
		fo_die(EXIT_USAGE, "input line %zu is not UTF-8", fo.sent + 1);
	if (fo.method != NULL || fo.data != NULL || fo.json != NULL) {
		json_t *o = json_pack("{s:o}", "url", r);
		if (fo.method != NULL)
			json_object_set_new(o, "method", json_string(fo.method));
		if (fo.data != NULL)
			json_object_set_new(o, "body", json_string(fo.data));
		if (fo.json != NULL)
			json_object_set(o, "json", fo.json);
		r = o;
	}
	fo_send_json_line(r);
	json_decref(r);
	fo.sent++;
}

/* A line of input: blank lines and '#' comments say nothing. */
static void
fo_input_line(char *s, size_t n)
{
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		n--;
	while (n > 0 && isspace((unsigned char)*s)) {
		s++;
		n--;
	}
	if (n == 0 || *s == '#')
		return;
	fo_send_url(s, n);
}

static void
fo_input_end(void)
{
	size_t n = evbuffer_get_length(fo.in_buf);

	if (n > 0) {	/* a last line without its newline */
		char *s = (char *)evbuffer_pullup(fo.in_buf, -1);
		fo_input_line(s, n);
	}
	evbuffer_drain(fo.in_buf, n);
	fo_flush_lines();
	evbuffer_add(fo_out(), "0\r\n\r\n", 5);
	fo.in_done = 1;
	if (fo.in_ev != NULL)
		event_del(fo.in_ev);
}

/* Takes the complete lines of in_buf. */
static void
fo_input_lines(void)
{
	struct evbuffer_ptr p;

	while ((p = evbuffer_search(fo.in_buf, "\n", 1, NULL)).pos >= 0) {
		size_t n = (size_t)p.pos;
		char *s = (char *)evbuffer_pullup(fo.in_buf, (ev_ssize_t)n + 1);
		fo_input_line(s, n);
		evbuffer_drain(fo.in_buf, n + 1);
	}
	fo_flush_lines();
	if (evbuffer_get_length(fo.in_buf) > FO_LINE_MAX)
		fo_die(EXIT_USAGE, "an input line is longer than %d bytes", FO_LINE_MAX);
}

/* Reads a chunk of input, unless the daemon has not taken what was sent:
 * its write callback resumes then. */
static void
fo_read_input(void)
{
	ssize_t n;

	if (fo.in_done || fo.finished)
		return;
	if (evbuffer_get_length(fo_out()) > FO_OUT_MAX) {
		fo.in_paused = 1;
		event_del(fo.in_ev);
		return;
	}
	n = evbuffer_read(fo.in_buf, fo.in_fd, FO_READ_CHUNK);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0)
		fo_die(EXIT_USAGE, "%s: %s", fo.input_path ? fo.input_path : "standard input",
		    strerror(errno));
	if (n == 0) {
		fo_input_end();
		return;
	}
	fo_input_lines();
	if (fo.in_regular) {	/* a file is always readable: a chunk a loop turn */
		static const struct timeval now = { 0, 0 };
		event_add(fo.in_ev, &now);
	}
}

static void
fo_input_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	fo_read_input();
}

/* Opens -i FILE (before the daemon is reached: a missing file is a usage
 * error, whatever the daemon). */
static void
fo_open_input(void)
{
	struct stat st;

	fo.in_fd = 0;
	if (fo.input_path != NULL && strcmp(fo.input_path, "-") != 0 &&
	    (fo.in_fd = open(fo.input_path, O_RDONLY | O_CLOEXEC)) < 0)
		fo_die(EXIT_USAGE, "-i %s: %s", fo.input_path, strerror(errno));
	/* A pipe, a socket or a terminal is read when ready; anything else (a
	 * file, /dev/null) cannot be polled, and is always ready. */
	fo.in_regular = fstat(fo.in_fd, &st) == 0 && !S_ISFIFO(st.st_mode) &&
	    !S_ISSOCK(st.st_mode) && !isatty(fo.in_fd);
}

/* Reads the input from the loop, a line list as it comes. */
static void
fo_watch_input(void)
{
	fo.in_buf = evbuffer_new();
	fo.in_ev = fo.in_regular ? evtimer_new(fo.base, fo_input_cb, NULL) :
	    event_new(fo.base, fo.in_fd, EV_READ | EV_PERSIST, fo_input_cb, NULL);
	if (fo.in_regular) {
		static const struct timeval now = { 0, 0 };
		event_add(fo.in_ev, &now);
	} else
		event_add(fo.in_ev, NULL);
}

/* A streamed batch: the head, then its options line; requests follow. */
static void
fo_send_head(void)
{
	evbuffer_add_printf(fo_out(), "POST /v1/batch HTTP/1.1\r\nHost: fanoutd\r\n"
	    "User-Agent: fanout/%s\r\nContent-Type: application/x-ndjson\r\n"
	    "Accept: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n",
	    FANOUTD_VERSION);
	json_t *line = json_pack("{s:O}", "options", fo.opts);
	fo_send_json_line(line);
	json_decref(line);
	fo_flush_lines();	/* at once: the answer begins with it */
}

/* The flags' options into a document's own: a flag wins, -H adds to its
 * headers, and -o's base64 yields to a body mode the document chose. */
static void
fo_merge_options(json_t *doc)
{
	json_t *o = json_object_get(doc, "options"), *v, *h;
	const char *k;

	if (o == NULL)
		json_object_set_new(doc, "options", o = json_object());
	if (!json_is_object(o))
		return;	/* the daemon says what is wrong with it */
	json_object_foreach(fo.opts, k, v) {
		if (strcmp(k, "headers") == 0 && json_is_object(h = json_object_get(o, "headers")))
			json_object_update(h, v);
		else if (strcmp(k, "body") != 0 || !fo.body_implied ||
		    json_object_get(o, "body") == NULL)
			json_object_set(o, k, v);
	}
}

/* --batch: the document, read whole (the daemon bounds it by
 * max_request_bytes) and sent with its length, the flags' options merged
 * into it; one that does not parse goes as it is, for the daemon to say
 * what is wrong. */
static void
fo_send_document(void)
{
	struct evbuffer *doc = evbuffer_new();
	json_t *d;
	ssize_t n;

	while ((n = evbuffer_read(doc, fo.in_fd, FO_READ_CHUNK)) > 0)
		;
	if (n < 0)
		fo_die(EXIT_USAGE, "%s: %s", fo.input_path ? fo.input_path : "standard input",
		    strerror(errno));
	/* (json_is_object() evaluates its argument twice: d is parsed first.) */
	d = json_object_size(fo.opts) == 0 || evbuffer_get_length(doc) == 0 ? NULL :
	    json_loadb((const char *)evbuffer_pullup(doc, -1), evbuffer_get_length(doc),
	    JSON_ALLOW_NUL, NULL);
	if (json_is_object(d)) {
		char *s;
		fo_merge_options(d);
		s = json_dumps(d, JSON_COMPACT);
		evbuffer_drain(doc, evbuffer_get_length(doc));
		evbuffer_add(doc, s, strlen(s));
		free(s);
	}
	json_decref(d);
	evbuffer_add_printf(fo_out(), "POST /v1/batch HTTP/1.1\r\nHost: fanoutd\r\n"
	    "User-Agent: fanout/%s\r\nContent-Type: application/json\r\n"
	    "Accept: application/x-ndjson\r\nContent-Length: %zu\r\n\r\n", FANOUTD_VERSION,
	    evbuffer_get_length(doc));
	evbuffer_add_buffer(fo_out(), doc);
	evbuffer_free(doc);
	fo.in_done = 1;
}

/*
 * Results.
 */

static void
fo_count_kind(const char *kind)
{
	size_t i;

	for (i = 0; i < fo.nkinds; i++)
		if (strcmp(fo.kind_names[i], kind) == 0)
			break;
	if (i == fo.nkinds) {
		if (fo.nkinds == sizeof(fo.kinds) / sizeof(fo.kinds[0]))
			return;
		fo.kind_names[fo.nkinds++] = strdup(kind);
	}
	fo.kinds[i]++;
}

/* A body's file name under -o: its id when that is a plain name, else its
 * index. */
static void
fo_body_path(char *path, size_t len, const json_t *r)
{
	const json_t *id = json_object_get(r, "id");
	const char *s = json_is_string(id) ? json_string_value(id) : NULL;
	int plain = s != NULL && *s != '\0' && *s != '.' && strlen(s) < 200;

	for (const char *p = s; plain && *p != '\0'; p++)
		plain = isalnum((unsigned char)*p) || *p == '.' || *p == '_' || *p == '-';
	if (plain)
		snprintf(path, len, "%s/%s", fo.outdir, s);
	else if (json_is_integer(id))
		snprintf(path, len, "%s/%lld", fo.outdir, (long long)json_integer_value(id));
	else
		snprintf(path, len, "%s/%lld", fo.outdir,
		    (long long)json_integer_value(json_object_get(r, "index")));
}

/* -o: the body goes to its file, and leaves the result. */
static void
fo_save_body(json_t *r)
{
	const json_t *body = json_object_get(r, "body");
	const char *enc = json_string_value(json_object_get(r, "body_encoding"));
	char path[PATH_MAX];
	unsigned char *bytes = NULL;
	size_t n = 0;
	FILE *f;

	if (body == NULL)
		return;
	if (enc != NULL && strcmp(enc, "base64") == 0 && json_is_string(body)) {
		size_t in = json_string_length(body);
		bytes = malloc(in / 4 * 3 + 3);
		int got = EVP_DecodeBlock(bytes, (const unsigned char *)json_string_value(body),
		    (int)in);
		if (got < 0)
			fo_die(EXIT_ERRORS, "index %lld: the daemon sent bad base64",
			    (long long)json_integer_value(json_object_get(r, "index")));
		/* EVP_DecodeBlock counts the padding's zero bytes too. */
		n = (size_t)got - (in >= 1 && json_string_value(body)[in - 1] == '=') -
		    (in >= 2 && json_string_value(body)[in - 2] == '=');
	} else if (json_is_string(body)) {	/* --body text asked for */
		n = json_string_length(body);	/* may hold NULs */
		bytes = malloc(n + 1);
		memcpy(bytes, json_string_value(body), n);
	} else {	/* --body json: the value, serialised again */
		bytes = (unsigned char *)json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
		n = strlen((char *)bytes);
	}
	fo_body_path(path, sizeof(path), r);
	if ((f = fopen(path, "we")) == NULL || fwrite(bytes, 1, n, f) != n || fclose(f) != 0)
		fo_die(EXIT_ERRORS, "-o: %s: %s", path, strerror(errno));
	free(bytes);
	json_object_del(r, "body");
	json_object_set_new(r, "body_file", json_string(path));
}

static void
fo_human_size(char *buf, size_t len, double n)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB" };
	int u = 0;

	while (n >= 1024 && u < 3) {
		n /= 1024;
		u++;
	}
	snprintf(buf, len, u == 0 ? "%.0f %s" : "%.1f %s", n, units[u]);
}

/* A result as a line for a person: status or error, time, size, URL. */
static void
fo_print_readable(const json_t *r)
{
	const json_t *err = json_object_get(r, "error");
	const json_t *t = json_object_get(json_object_get(r, "timing"), "total_ms");
	const char *url = json_string_value(json_object_get(r, "final_url"));
	char size[32];

	if (url == NULL)
		url = json_string_value(json_object_get(r, "url"));
	if (url == NULL)
		url = "(no url)";
	if (err != NULL) {
		printf("%-5s %-16s %s: %s\n", "ERR", json_string_value(json_object_get(err, "kind")),
		    url, json_string_value(json_object_get(err, "message")));
		return;
	}
	fo_human_size(size, sizeof(size), (double)json_integer_value(json_object_get(r, "bytes")));
	printf("%-5lld %9.1f ms %10s  %s\n", (long long)json_integer_value(json_object_get(r, "status")),
	    json_number_value(t), size, url);
}

static void
fo_progress(int last)
{
	uint64_t now = fo_now_us();
	double secs = (double)(now - fo.t_start) / 1e6, rate = secs > 0 ? fo.done / secs : 0;
	char kinds[256] = "";

	if (!fo.tty_err || fo.quiet || (!last && now - fo.t_progress < FO_PROGRESS_US))
		return;
	fo.t_progress = now;
	for (size_t i = 0; i < fo.nkinds; i++)
		snprintf(kinds + strlen(kinds), sizeof(kinds) - strlen(kinds), "%s%s %zu",
		    i ? ", " : " (", fo.kind_names[i], fo.kinds[i]);
	if (fo.nkinds > 0)
		strncat(kinds, ")", sizeof(kinds) - strlen(kinds) - 1);
	fprintf(stderr, "\r\033[K%zu/%zu%s done, %zu errors%s, %.0f req/s", fo.done, fo.sent,
	    fo.in_done ? "" : "+", fo.errors, kinds, rate);
	if (fo.in_done && rate > 0 && fo.sent > fo.done)
		fprintf(stderr, ", ETA %.0f s", (double)(fo.sent - fo.done) / rate);
	if (last)
		fputc('\n', stderr);
}

static void
fo_summary(const json_t *s, const char *raw, size_t rawlen)
{
	fo.finished = 1;
	fo.unflushed = 1;
	fo.incomplete = !json_is_true(json_object_get(s, "complete"));
	fo_progress(1);
	if (!fo.tty_out) {
		fwrite(raw, 1, rawlen, stdout);
		fputc('\n', stdout);
		return;
	}
	if (!fo.quiet)
		printf("%lld requests: %lld responses, %lld errors, %s, %.1f ms\n",
		    (long long)json_integer_value(json_object_get(s, "total")),
		    (long long)json_integer_value(json_object_get(s, "responses")),
		    (long long)json_integer_value(json_object_get(s, "errors")),
		    json_is_true(json_object_get(s, "complete")) ? "complete" : "cut short",
		    json_number_value(json_object_get(s, "elapsed_ms")));
}

/* A result is written: a closed stdout (| head) stops fanout, nobody
 * reading the rest. */
static void
fo_output_done(void)
{
	fo.unflushed = 1;
	if (ferror(stdout))
		fo_die(EXIT_ERRORS, "standard output: %s", strerror(errno));
	fo_progress(0);
}

/* A result counted from its status or error kind, found by a scan. */
static void
fo_count(const char *s, size_t n)
{
	static const char *const outcome[] = { "status", "error", NULL };
	static const char *const kind[] = { "kind", NULL };
	const char *v, *k;
	int found = jscan_top_key(s, n, outcome, &v);
	char name[32];
	size_t len = 0;

	fo.done++;
	if (found != 1) {	/* a response, with its status unless the line lacks one */
		fo.responses++;
		if (found == 0)
			fo.failed_status += strtol(v, NULL, 10) >= 400;
		return;
	}
	fo.errors++;
	if (jscan_top_key(v, n - (size_t)(v - s), kind, &k) == 0 && *k == '"')
		for (k++; len + 1 < sizeof(name) && k + len < s + n && k[len] != '"'; len++)
			name[len] = k[len];
	name[len] = '\0';
	fo_count_kind(len > 0 ? name : "unknown");
}

/* One line of the answer: a result, or the summary (which the daemon
 * writes as a line of its own, beginning so). A result going to a pipe
 * goes as it came; for a terminal or -o it is parsed whole. */
static void
fo_result_line(const char *s, size_t n)
{
	json_error_t err;
	json_t *r;

	if (strncmp(s, "{\"summary\":", 11) == 0) {
		if ((r = json_loadb(s, n, 0, &err)) == NULL)
			fo_die(EXIT_ERRORS, "the daemon sent a summary that is not JSON: %s", err.text);
		fo_summary(json_object_get(r, "summary"), s, n);
		json_decref(r);
		return;
	}
	fo_count(s, n);
	if (!fo.tty_out && fo.outdir == NULL) {
		fwrite(s, 1, n, stdout);
		fputc('\n', stdout);
		fo_output_done();
		return;
	}
	if ((r = json_loadb(s, n, JSON_ALLOW_NUL, &err)) == NULL)
		fo_die(EXIT_ERRORS, "the daemon sent a line that is not JSON: %s", err.text);
	if (fo.outdir != NULL)
		fo_save_body(r);
	if (fo.tty_err && fo.t_progress != 0 && !fo.quiet)
		fputs("\r\033[K", stderr);	/* the progress line comes back after */
	if (fo.tty_out)
		fo_print_readable(r);
	else {	/* -o: the result without its body */
		char *out = json_dumps(r, JSON_COMPACT | JSON_REAL_PRECISION(12));
		puts(out);
		free(out);
	}
	json_decref(r);
	fo_output_done();
}

static void
fo_stdout_flush(void)
{
	fo.unflushed = 0;
	if (fflush(stdout) != 0)
		fo_die(EXIT_ERRORS, "standard output: %s", strerror(errno));
	fo.t_flushed = fo_now_us();
}

/* SIGINT, SIGTERM: the results already buffered are the caller's (a
 * crawl resumed from its output would fetch them again), then the signal
 * does what it would have done. */
static void
fo_on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	fflush(stdout);
	signal((int)sig, SIG_DFL);
	raise((int)sig);
}

static void
fo_stdout_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	fo_stdout_flush();
}

/* What the daemon's reads brought goes out at once, unless the last write
 * was under FO_FLUSH_US ago: then with what the next ones bring, when that
 * time is up. Results come in reads of two or three; a write for each
 * read woke the reader down the pipe as often, which cost as much CPU as
 * fanout's own work. A result waits at most FO_FLUSH_US, the first none. */
static void
fo_stdout_flush_soon(void)
{
	uint64_t since = fo_now_us() - fo.t_flushed;

	if (!fo.unflushed)	/* a read with no whole line: nothing to write, no time to stamp */
		return;
	if (since >= FO_FLUSH_US) {
		event_del(fo.flush_ev);
		fo_stdout_flush();
	} else if (!event_pending(fo.flush_ev, EV_TIMEOUT, NULL)) {
		struct timeval wait = { 0, (suseconds_t)(FO_FLUSH_US - since) };

		event_add(fo.flush_ev, &wait);
	}
}

/* The answer's body: NDJSON lines, or for a --batch document on a
 * terminal, the same once asked as NDJSON (Accept). */
static void
fo_take_lines(void)
{
	struct evbuffer_ptr p;

	while ((p = evbuffer_search(fo.lines, "\n", 1, NULL)).pos >= 0) {
		size_t n = (size_t)p.pos;
		const char *s = (const char *)evbuffer_pullup(fo.lines, (ev_ssize_t)n + 1);
		if (n > 0)
			fo_result_line(s, n);
		evbuffer_drain(fo.lines, n + 1);
	}
	if (evbuffer_get_length(fo.lines) > FO_LINE_MAX)
		fo_die(EXIT_ERRORS, "the daemon sent a line longer than %d bytes", FO_LINE_MAX);
}

/* The daemon refused the batch: its JSON error, said plainly. */
static void
fo_refused(void)
{
	size_t n = evbuffer_get_length(fo.refusal);
	json_t *j = json_loadb(n ? (const char *)evbuffer_pullup(fo.refusal, -1) : "", n, 0, NULL);
	const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
	char msg[1024];

	snprintf(msg, sizeof(msg), "%s", m != NULL ? m : "no reason given");
	json_decref(j);
	fo_die(EXIT_USAGE, "the daemon refused the batch (%d): %s", fo.head.status, msg);
}

static void
fo_daemon_read(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	const char *why = NULL;
	int rc;

	(void)arg;
	if (!fo.have_head) {
		for (;;) {
			rc = h1_parse_head(in, FO_HEAD_MAX, 0, &fo.head, &why);
			if (rc == H1_AGAIN)
				return;
			if (rc != H1_DONE)
				fo_die(EXIT_ERRORS, "the daemon's answer: %s", why);
			if (fo.head.status >= 200)
				break;
			h1_head_clear(&fo.head);	/* 100 Continue */
		}
		fo.have_head = 1;
		h1_body_init(&fo.body, &fo.head);
	}
	rc = h1_body_read(&fo.body, in, fo.head.status == 200 ? fo.lines : fo.refusal, 0, &why);
	if (rc == H1_ERROR)
		fo_die(EXIT_ERRORS, "the daemon's answer: %s", why);
	if (fo.head.status != 200) {
		if (rc == H1_DONE)
			fo_refused();
		return;
	}
	fo_take_lines();
	fo_stdout_flush_soon();
	if (rc == H1_DONE) {
		if (!fo.finished)
			fo_die(EXIT_ERRORS, "the daemon's answer ended without its summary");
		event_base_loopexit(fo.base, NULL);
	}
}

/* The progress line is redrawn while requests wait, not only when one
 * ends: its rate and ETA move on. */
static void
fo_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (!fo.finished)
		fo_progress(0);
}

static void
fo_daemon_write(struct bufferevent *bev, void *arg)
{
	(void)bev;
	(void)arg;
	if (fo.in_paused && !fo.in_done) {	/* the daemon took what was sent */
		fo.in_paused = 0;
		if (fo.in_regular) {
			static const struct timeval now = { 0, 0 };
			event_add(fo.in_ev, &now);
		} else
			event_add(fo.in_ev, NULL);
	}
}

static void
fo_daemon_event(struct bufferevent *bev, short what, void *arg)
{
	(void)arg;
	if ((what & BEV_EVENT_EOF) && fo.have_head && fo.head.status != 200 &&
	    fo.body.framing == H1_CLOSE) {
		h1_body_read(&fo.body, bufferevent_get_input(bev), fo.refusal, 1, NULL);
		fo_refused();
	}
	if (fo.finished) {
		event_base_loopexit(fo.base, NULL);
		return;
	}
	fo_die(EXIT_ERRORS, "the daemon at %s closed the connection before the summary%s%s",
	    fo.where, (what & BEV_EVENT_ERROR) ? ": " : "",
	    (what & BEV_EVENT_ERROR) ? strerror(EVUTIL_SOCKET_ERROR()) : "");
}

int
main(int argc, char **argv)
{
	int fd;

	signal(SIGPIPE, SIG_IGN);
	fo.tty_out = isatty(1);
	fo.tty_err = isatty(2);
	fo_options(argc, argv);
	if (fo.nurls == 0 && fo.input_path == NULL && isatty(0) && !fo.batch_doc)
		fo_die(EXIT_USAGE, "no URLs: give them as arguments, with -i FILE, or on standard "
		    "input (fanout -h)");
	if (fo.nurls == 0)
		fo_open_input();
	fd = fo_reach();
	if (fo.verbose)
		fprintf(stderr, "fanout: connected to fanoutd at %s\n", fo.where);
	evutil_make_socket_nonblocking(fd);
	fo.base = event_base_new();
	fo.bev = bufferevent_socket_new(fo.base, fd, BEV_OPT_CLOSE_ON_FREE);
	fo.lines = evbuffer_new();
	fo.refusal = evbuffer_new();
	fo.pend = evbuffer_new();
	fo.flush_ev = evtimer_new(fo.base, fo_stdout_flush_cb, NULL);
	event_add(evsignal_new(fo.base, SIGINT, fo_on_signal, NULL), NULL);
	event_add(evsignal_new(fo.base, SIGTERM, fo_on_signal, NULL), NULL);
	bufferevent_setcb(fo.bev, fo_daemon_read, fo_daemon_write, fo_daemon_event, NULL);
	bufferevent_setwatermark(fo.bev, EV_WRITE, FO_OUT_MAX / 2, 0);
	bufferevent_set_max_single_read(fo.bev, FO_OUT_MAX);	/* libevent's default: 16 KiB */
	if (!fo.tty_out) {
		/* Flushed by fo_stdout_flush_soon(): one write() for what the
		 * daemon's reads brought. The buffer must be given: glibc ignores
		 * the size when it allocates one, and uses st_blksize (4 KiB for a
		 * pipe), which made a write() every three results. Its pages are
		 * touched only as far as FO_FLUSH_US of results reach. */
		static char outbuf[FO_OUT_MAX];

		setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf));
		/* A write to a full pipe stops the whole loop, and with it the
		 * reading of the daemon: a bigger pipe lets the reader down it
		 * fall behind for longer (best effort: up to pipe-max-size). */
		fcntl(1, F_SETPIPE_SZ, 1 << 20);
	}
	bufferevent_enable(fo.bev, EV_READ | EV_WRITE);
	/* Woken by every write of the daemon's, fanout would preempt it there
	 * and then (a task that sleeps much gets the CPU at once on waking):
	 * in work TF's 20,000 results on two cores the daemon ran in 296 time
	 * slices instead of 58 and waited 19 ms for a CPU instead of 11, some
	 * 3% of the throughput. SCHED_BATCH keeps the same share of the CPU
	 * but waits for its turn on waking; nothing a person sees moves by
	 * more than a few ms. Best effort: any user may ask it. */
	if (sched_getscheduler(0) == SCHED_OTHER)	/* not over a policy the user chose */
		sched_setscheduler(0, SCHED_BATCH, &(struct sched_param){ .sched_priority = 0 });
	fo.t_start = fo_now_us();
	if (fo.tty_err && !fo.quiet) {
		static const struct timeval tick = { 0, FO_PROGRESS_US };
		event_add(event_new(fo.base, -1, EV_PERSIST, fo_tick, NULL), &tick);
	}
	if (fo.batch_doc)
		fo_send_document();
	else if (fo.nurls > 0) {
		fo_send_head();
		for (int i = 0; i < fo.nurls; i++)
			fo_send_url(fo.urls[i], strlen(fo.urls[i]));
		fo_flush_lines();
		evbuffer_add(fo_out(), "0\r\n\r\n", 5);
		fo.in_done = 1;
	} else {
		fo_send_head();
		fo_watch_input();
	}
	event_base_dispatch(fo.base);
	fo_stdout_flush();	/* the last results, and the summary: a failure is an error */
	/* Cut short (a deadline): some request had no response. */
	if (fo.errors > 0 || fo.incomplete || (fo.fail && fo.failed_status > 0))
		return EXIT_ERRORS;
	return EXIT_OK;
}
