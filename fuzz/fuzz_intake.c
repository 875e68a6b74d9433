/* fuzz_intake.c: a caller's batch document (intake.c) as the daemon takes
 * it: JSON with NULs allowed, the document's checks, then every request's. */
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "conf.h"
#include "intake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct conf *c;
	json_t *doc, *elem;
	struct bopts o;
	struct reqspec r;
	char why[256];
	size_t i;

	if (c == NULL)
		c = conf_new_default();
	doc = json_loadb((const char *)data, size, JSON_ALLOW_NUL, NULL);
	if (doc == NULL)
		return 0;
	if (intake_document(doc, c, &o, why, sizeof(why)) == 0) {
		json_array_foreach(json_object_get(doc, "requests"), i, elem) {
			(void)intake_request(elem, &o, &r, why, sizeof(why));
			url_free(&r.url);	/* the caller's, whatever the outcome */
		}
	}
	json_decref(doc);
	return 0;
}
