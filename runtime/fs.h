/*
 * fs: the file-system calls scimrun needs (make a directory path, stat, copy a file, the current
 * directory), done synchronously with libuv's uv_fs_* instead of shelling out to mkdir/stat/cp/pwd.
 *
 * Lua module scimrun.fs (luv's error convention: misuse raises, an operational failure returns
 * nil, "ECODE: message: path", "ECODE" with ECODE libuv's error name, e.g. "ENOENT"):
 *   fs.mkdir_p(path [, mode = 0777]) -> true      every missing directory of path is created
 *       with mode (less the umask); existing directories are left as they are
 *   fs.stat(path) -> {type, mode, perm, size, ino, dev, nlink, uid, gid, mtime}   follows links;
 *       type is "file", "directory", "link", "fifo", "socket", "char", "block" or "unknown";
 *       mode is st_mode whole, perm its permission bits (mode & 07777); mtime in seconds
 *   fs.copyfile(src, dst [, {excl = true}]) -> true   dst gets src's bytes and mode; excl
 *       refuses an existing dst (EEXIST)
 *   fs.cwd() -> path
 * The calls block the loop thread for their duration: meant for a few calls at start, not for
 * bulk I/O inside a run.
 */
#ifndef SCIMRUN_FS_H
#define SCIMRUN_FS_H

#include <lua.h>

/* Creates path and its missing parents with mode; 0 or a negative libuv error code. A parent
 * that exists and is not a directory fails with UV_ENOTDIR, path itself with UV_EEXIST. */
int fs_mkdir_p(const char *path, int mode);

int luaopen_scimrun_fs(lua_State *L);

#endif
