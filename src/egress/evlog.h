/* The egress audit log on disk: append-only JSON lines in
 * <data>/egress/events.jsonl, bounded and rotated (docs/egress.md).
 *
 * Every event is one line, written with a single write(2) on an O_APPEND
 * descriptor, so a reader sees whole lines; the only partial line a crash
 * can leave is the last one, which loading skips and the next open cuts
 * off. When the next line would take the file over max_bytes, it is renamed
 * to events.jsonl.1 (replacing the previous one, atomically) and a new file
 * is started: the log never holds more than two files of max_bytes. */
#pragma once
#include <jansson.h>
#include <stddef.h>

#define EGRESS_EVLOG_FILE "events.jsonl"
#define EGRESS_EVLOG_DEFAULT_MAX (2u << 20)

typedef struct egress_evlog egress_evlog;

/* Prepares a log in dir (created 0700 on the first append). Never fails
 * but for memory. */
egress_evlog *egress_evlog_new(const char *dir, size_t max_bytes);
void egress_evlog_free(egress_evlog *l);

/* Appends one event (compact JSON + '\n'). -errno on failure; the event
 * is then only in memory. */
int egress_evlog_append(egress_evlog *l, json_t *ev);

/* Calls fn with the events among the last `max` lines of the log (the
 * rotated file first), oldest first. A line that is not a JSON object with
 * a positive integer "seq" greater than the previous one is skipped (only a
 * crash leaves such a line: one per crash). Returns the number of events
 * passed to fn. fn borrows ev. */
size_t egress_evlog_load(egress_evlog *l, size_t max, void (*fn)(json_t *ev, void *ud), void *ud);
