/* map.c: chained hash table with power-of-two buckets, doubled at load 1.
 * Small and boring on purpose; no library on the stack offers one for C. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "map.h"

struct map_ent {
	const char *key;
	void *val;
	uint32_t hash;
	struct map_ent *next;
};

struct map {
	struct map_ent **b;
	size_t nb;	/* a power of two */
	size_t n;
};

/* FNV-1a: keys are short host names and origins, not attacker-chosen floods
 * (a batch's distinct origins are bounded by max_batch). */
static uint32_t
map_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

struct map *
map_new(void)
{
	struct map *m = xcalloc(1, sizeof(*m));

	m->nb = 16;
	m->b = xcalloc(m->nb, sizeof(*m->b));
	return m;
}

void
map_free(struct map *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->nb; i++) {
		struct map_ent *e = m->b[i], *next;
		for (; e != NULL; e = next) {
			next = e->next;
			free(e);
		}
	}
	free(m->b);
	free(m);
}

static struct map_ent **
map_slot(const struct map *m, const char *key, uint32_t h)
{
	struct map_ent **pe = &m->b[h & (m->nb - 1)];

	for (; *pe != NULL; pe = &(*pe)->next)
		if ((*pe)->hash == h && strcmp((*pe)->key, key) == 0)
			break;
	return pe;
}

void *
map_get(const struct map *m, const char *key)
{
	struct map_ent *e = *map_slot(m, key, map_hash(key));

	return e != NULL ? e->val : NULL;
}

static void
map_grow(struct map *m)
{
	size_t nb = m->nb * 2;
	struct map_ent **b = xcalloc(nb, sizeof(*b));

	for (size_t i = 0; i < m->nb; i++) {
		struct map_ent *e = m->b[i], *next;
		for (; e != NULL; e = next) {
			next = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
		}
	}
	free(m->b);
	m->b = b;
	m->nb = nb;
}

void
map_put(struct map *m, const char *key, void *val)
{
	uint32_t h = map_hash(key);
	struct map_ent *e = xcalloc(1, sizeof(*e));

	if (m->n >= m->nb)
		map_grow(m);
	e->key = key;
	e->val = val;
	e->hash = h;
	e->next = m->b[h & (m->nb - 1)];
	m->b[h & (m->nb - 1)] = e;
	m->n++;
}

void *
map_del(struct map *m, const char *key)
{
	struct map_ent **pe = map_slot(m, key, map_hash(key)), *e = *pe;
	void *val;

	if (e == NULL)
		return NULL;
	*pe = e->next;
	val = e->val;
	free(e);
	m->n--;
	return val;
}

size_t
map_count(const struct map *m)
{
	return m->n;
}

void
map_foreach(const struct map *m, void (*fn)(void *val, void *arg), void *arg)
{
	for (size_t i = 0; i < m->nb; i++)
		for (const struct map_ent *e = m->b[i]; e != NULL; e = e->next)
			fn(e->val, arg);
}
