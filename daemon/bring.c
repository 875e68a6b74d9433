/* bring.c: see bring.h. */
#include <stdlib.h>
#include <string.h>

#include "bring.h"
#include "util.h"

static void **
bring_at(const struct bring *r, size_t i)
{
	return &r->v[(r->head + (i - r->base)) & (r->cap - 1)];
}

void *
bring_get(const struct bring *r, size_t i)
{
	return i >= r->base && i - r->base < r->cap ? *bring_at(r, i) : NULL;
}

void
bring_set(struct bring *r, size_t i, void *p)
{
	if (i - r->base >= r->cap) {
		size_t cap = r->cap ? r->cap : 64;
		while (i - r->base >= cap)
			cap *= 2;
		void **v = xcalloc(cap, sizeof(*v));
		for (size_t k = 0; k < r->cap; k++)	/* unwrap, lowest first */
			v[k] = r->v[(r->head + k) & (r->cap - 1)];
		free(r->v);
		r->v = v;
		r->head = 0;
		r->cap = cap;
	}
	*bring_at(r, i) = p;
}

void
bring_slide(struct bring *r, size_t limit)
{
	while (r->base < limit && (r->cap == 0 || *bring_at(r, r->base) == NULL)) {
		r->base++;
		if (r->cap > 0)
			r->head = (r->head + 1) & (r->cap - 1);
	}
}

void
bring_clear(struct bring *r, size_t i, size_t limit)
{
	if (bring_get(r, i) != NULL)
		*bring_at(r, i) = NULL;
	bring_slide(r, limit);
}

void
bring_free(struct bring *r, void (*fn)(void *))
{
	for (size_t k = 0; k < r->cap; k++)
		if (r->v[k] != NULL)
			fn(r->v[k]);
	free(r->v);
	memset(r, 0, sizeof(*r));
}
