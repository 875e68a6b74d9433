/* test_bring.c: the sliding pointer window (bring.c) alone, against a
 * plain array as the model, and the bound that matters to a streamed
 * batch: the window spans what is held, not what has come. */
#include <stdint.h>
#include <stdlib.h>

#include "bring.h"
#include "unit.h"

#define N 20000

static int freed;

static void
count_free(void *p)
{
	(void)p;
	freed++;
}

static void *
tag(size_t i)
{
	return (void *)(uintptr_t)(i + 1);
}

static void
test_empty(void)
{
	struct bring r = { 0 };

	CHECK(bring_get(&r, 0) == NULL && bring_get(&r, 12345) == NULL);
	bring_slide(&r, 10);	/* nothing held: the base moves to the limit */
	CHECK(r.base == 10 && r.cap == 0);
	bring_set(&r, 10, tag(10));
	CHECK(bring_get(&r, 10) == tag(10) && bring_get(&r, 9) == NULL && bring_get(&r, 11) == NULL);
	freed = 0;
	bring_free(&r, count_free);
	CHECK(freed == 1 && r.v == NULL && r.cap == 0 && r.base == 0);
}

/* Entries set far ahead grow the window by doubling; entries kept across
 * growth and wrap-around read back. */
static void
test_growth_keeps_entries(void)
{
	struct bring r = { 0 };

	for (size_t i = 0; i < 100; i++)
		bring_set(&r, i, tag(i));
	for (size_t i = 0; i < 90; i++)
		bring_clear(&r, i, i + 1);
	CHECK(r.base == 90);
	for (size_t i = 100; i < 300; i++)	/* wraps, then grows unwrapping */
		bring_set(&r, i, tag(i));
	int ok = 1;
	for (size_t i = 90; i < 300; i++)
		ok &= bring_get(&r, i) == tag(i);
	CHECK(ok);
	CHECK(bring_get(&r, 89) == NULL && bring_get(&r, 300) == NULL);
	CHECK(r.cap >= 210 && (r.cap & (r.cap - 1)) == 0);
	freed = 0;
	bring_free(&r, count_free);
	CHECK(freed == 210);
}

/* The base stops at the first entry still held, and at the limit. */
static void
test_slide_stops(void)
{
	struct bring r = { 0 };

	for (size_t i = 0; i < 8; i++)
		bring_set(&r, i, tag(i));
	bring_clear(&r, 1, 8);
	CHECK(r.base == 0);	/* 0 still held */
	bring_clear(&r, 0, 8);
	CHECK(r.base == 2);
	bring_clear(&r, 3, 8);
	bring_clear(&r, 2, 3);	/* not past the limit, though 3 is empty */
	CHECK(r.base == 3);
	bring_slide(&r, 8);
	CHECK(r.base == 4);
	bring_free(&r, count_free);
}

/* A run as a streamed batch makes it: requests come in order, at most
 * `ahead` beyond the oldest one held, and end in a scrambled order. Every
 * step is checked against the model, and the window never grows past the
 * power of two that holds `ahead` entries. */
static void
test_against_a_model(void)
{
	static void *model[N];
	struct bring r = { 0 };
	size_t next = 0, lowest = 0, ahead = 300, held = 0, maxcap = 0;
	unsigned seed = 7;
	int ok = 1;

	while (lowest < N) {
		if (next < N && next < lowest + ahead && rand_r(&seed) % 3 != 0) {
			model[next] = tag(next);
			bring_set(&r, next, tag(next));
			next++;
			held++;
		} else if (held > 0) {
			size_t i = lowest + (size_t)rand_r(&seed) % (next - lowest);
			while (model[i] == NULL)
				i = i + 1 < next ? i + 1 : lowest;
			model[i] = NULL;
			held--;
			while (lowest < next && model[lowest] == NULL)
				lowest++;
			bring_clear(&r, i, next);
		} else
			continue;
		ok &= r.base == lowest;
		for (size_t k = lowest; k < next && k < lowest + 8; k++)
			ok &= bring_get(&r, k) == model[k];
		if (r.cap > maxcap)
			maxcap = r.cap;
	}
	for (size_t k = 0; k < N; k++)
		ok &= bring_get(&r, k) == NULL;
	CHECK(ok);
	CHECK(maxcap == 512);	/* 300 ahead: the first power of two above, never more */
	freed = 0;
	bring_free(&r, count_free);
	CHECK(freed == 0);
}

int
main(void)
{
	test_empty();
	test_growth_keeps_entries();
	test_slide_stops();
	test_against_a_model();
	return UNIT_DONE();
}
