/* bring.h: pointers by a growing index, from the lowest one still held: a
 * window that grows by doubling and slides as its lowest entries are let
 * go, so that what it holds is what is in use, not what has come. A
 * streamed batch keeps its requests' elements and early results in one
 * each (batch.c): memory follows the requests in flight, not the count.
 *
 * A zeroed struct bring is an empty window at index 0. Entries are NULL
 * until set; an index below the base reads as NULL and must not be set. */
#ifndef FANOUTD_BRING_H
#define FANOUTD_BRING_H

#include <stddef.h>

struct bring {
	void **v;
	size_t base;		/* the index of v[head] */
	size_t head, cap;	/* cap: 0 or a power of two */
};

/* Entry i, or NULL. */
void *bring_get(const struct bring *r, size_t i);

/* Sets entry i (at or above the base), growing the window to reach it. */
void bring_set(struct bring *r, size_t i, void *p);

/* Slides the base past empty entries, up to limit (the lowest index that
 * may still be set). */
void bring_slide(struct bring *r, size_t limit);

/* Lets entry i go, and slides past what is empty below limit. */
void bring_clear(struct bring *r, size_t i, size_t limit);

/* Frees the entries left (with fn) and the window; r is empty again. */
void bring_free(struct bring *r, void (*fn)(void *));

#endif
