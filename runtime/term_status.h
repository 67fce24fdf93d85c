/*
 * term_status: the status area at the bottom of a terminal (live progress). The log writes its
 * lines above it: term_status_erase() before a line, term_status_draw() after, so a log line
 * never goes through the area. The text is drawn as given (lines separated by '\n', each
 * shorter than the terminal is wide: the caller fits them); the cursor stays at the end of its
 * last line. Nothing is drawn while no text is set. Not thread-safe (the runtime has one
 * thread).
 */
#ifndef SCIMRUN_TERM_STATUS_H
#define SCIMRUN_TERM_STATUS_H

#include <stdio.h>

/* Replaces the area's text (NULL or "" clears it) and redraws it on f at once. */
void term_status_set(FILE *f, const char *text);
/* Erases the area from the screen, keeping its text (call before writing a log line). */
void term_status_erase(FILE *f);
/* Draws the area again after term_status_erase. */
void term_status_draw(FILE *f);
/* Is fd a terminal; columns of the terminal on fd (80 when unknown). */
int term_is_tty(int fd);
int term_columns(int fd);

#endif
