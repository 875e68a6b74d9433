/* log.h: the one logging API. Levels follow syslog priorities so that the
 * journal and stderr share one vocabulary. */
#ifndef FANOUTD_LOG_H
#define FANOUTD_LOG_H

#include <stdarg.h>

enum log_level {
	LOG_LEVEL_ERROR = 3,
	LOG_LEVEL_WARN = 4,
	LOG_LEVEL_INFO = 6,
	LOG_LEVEL_DEBUG = 7,
};

extern int log_level;	/* messages above this level are dropped unformatted */

int log_level_parse(const char *name, int *level);
const char *log_level_name(int level);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* The level test sits in the macro so that arguments of a dropped message are
 * never evaluated, let alone formatted. */
#define log_error(...) do { if (log_level >= LOG_LEVEL_ERROR) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__); } while (0)
#define log_warn(...)  do { if (log_level >= LOG_LEVEL_WARN)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__); } while (0)
#define log_info(...)  do { if (log_level >= LOG_LEVEL_INFO)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__); } while (0)
#define log_debug(...) do { if (log_level >= LOG_LEVEL_DEBUG) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__); } while (0)

/* Copies caller-controlled text into dst with anything outside printable
 * ASCII escaped as \xHH, truncated to fit; returns dst. */
const char *log_escape(char *dst, size_t dstlen, const char *src, size_t srclen);

#endif
