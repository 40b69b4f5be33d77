#pragma once
/* ULIDs (26 chars, Crockford base32, time-ordered), lowercase like the Go
 * original prints them. ret must hold 27 bytes. */
void cr_ulid_new(char ret[27]);
/* 1 when s is a well-formed ULID. */
int cr_ulid_valid(const char *s);
