/* term_status.c: a redrawable status area below the log lines (see term_status.h). */
#include "term_status.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static struct {
  char *text;
  int shown; /* lines currently on the screen, 0 when erased */
} S = {NULL, 0};

void term_status_erase(FILE *f) {
  if (S.shown == 0)
    return;
  /* back to the first line of the area, then clear to the end of the screen */
  if (S.shown > 1)
    fprintf(f, "\033[%dA", S.shown - 1);
  fputs("\r\033[J", f);
  S.shown = 0;
}

void term_status_draw(FILE *f) {
  if (!S.text || S.shown > 0)
    return;
  fputs(S.text, f);
  int lines = 1;
  for (const char *p = S.text; *p; p++)
    if (*p == '\n')
      lines++;
  S.shown = lines;
}

void term_status_set(FILE *f, const char *text) {
  term_status_erase(f);
  free(S.text);
  S.text = (text && *text) ? strdup(text) : NULL;
  term_status_draw(f);
  fflush(f);
}

int term_is_tty(int fd) { return isatty(fd); }

int term_columns(int fd) {
  struct winsize ws;
  if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
    return ws.ws_col;
  return 80;
}
