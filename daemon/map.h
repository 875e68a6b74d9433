/* map.h: a string-keyed hash map for the daemon's lookup tables (origins,
 * DNS names, a batch's origins). Keys are not copied: each value embeds its
 * key and must outlive its entry. */
#ifndef FANOUTD_MAP_H
#define FANOUTD_MAP_H

#include <stddef.h>

struct map;

struct map *map_new(void);
void map_free(struct map *m);	/* values are the caller's */
void *map_get(const struct map *m, const char *key);
void map_put(struct map *m, const char *key, void *val);	/* key must be absent */
void *map_del(struct map *m, const char *key);
size_t map_count(const struct map *m);
/* Calls fn with each value, in no particular order; fn must not change m. */
void map_foreach(const struct map *m, void (*fn)(void *val, void *arg), void *arg);

#endif
