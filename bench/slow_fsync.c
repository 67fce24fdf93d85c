/* slow_fsync.c: an LD_PRELOAD shim that makes every fsync/fdatasync SLOW_FSYNC_US longer
 * (default 2000 us), as on a network block device, so bench/fsync_bench.sh can show what a
 * fast local disk hides. Built by that script; never linked into scimrun. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

static useconds_t extra(void) {
  const char *e = getenv("SLOW_FSYNC_US");
  return (useconds_t)(e ? atoi(e) : 2000);
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (!real)
    real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  int rc = real(fd);
  usleep(extra());
  return rc;
}

int fsync(int fd) {
  static int (*real)(int);
  if (!real)
    real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  int rc = real(fd);
  usleep(extra());
  return rc;
}
