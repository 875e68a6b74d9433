/* fuzz_h1.c: the HTTP/1.1 response reader (h1.c) on any bytes an upstream
 * could send: the head, then the body by the framing the head chose, fed in
 * pieces the first input byte sizes, with and without a HEAD request. */
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>

#include "h1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct evbuffer *in, *out;
	struct h1_head head;
	struct h1_body body;
	const char *why;
	size_t step, off = 0;
	int rc = H1_AGAIN;

	if (size < 1)
		return 0;
	step = (size_t)(data[0] % 64) + 1;
	in = evbuffer_new();
	out = evbuffer_new();
	while (off < size - 1 && rc == H1_AGAIN) {
		size_t n = size - 1 - off < step ? size - 1 - off : step;
		evbuffer_add(in, data + 1 + off, n);
		off += n;
		rc = h1_parse_head(in, 4096, data[0] & 0x80, &head, &why);
	}
	if (rc == H1_DONE) {
		h1_body_init(&body, &head);
		do {
			size_t n = size - 1 - off < step ? size - 1 - off : step;
			evbuffer_add(in, data + 1 + off, n);
			off += n;
			rc = h1_body_read(&body, in, out, off >= size - 1, &why);
			evbuffer_drain(out, evbuffer_get_length(out));
		} while (rc == H1_AGAIN && off < size - 1);
		(void)h1_find(&head, "content-encoding");
		h1_head_clear(&head);
	}
	evbuffer_free(in);
	evbuffer_free(out);
	return 0;
}
