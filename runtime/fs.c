/* fs.c: synchronous libuv file-system calls for Lua (see fs.h). */
#include "fs.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

/* Every uv_fs_* call here passes cb = NULL, so libuv runs it on this thread and returns its
 * result. That path never touches the loop (it is only stored in the request), so none is
 * given: the module works before the scheduler exists and in the C tests. */

static int is_directory(const char *path) {
  uv_fs_t req;
  int r = uv_fs_stat(NULL, &req, path, NULL);
  int dir = r == 0 && S_ISDIR(req.statbuf.st_mode);
  uv_fs_req_cleanup(&req);
  return dir;
}

int fs_mkdir_p(const char *path, int mode) {
  size_t n = strlen(path);
  if (n == 0)
    return UV_EINVAL;
  char *buf = malloc(n + 1);
  if (!buf)
    return UV_ENOMEM;
  memcpy(buf, path, n + 1);
  while (n > 1 && buf[n - 1] == '/')
    buf[--n] = '\0';
  int rc = 0;
  /* Each prefix ending before a '/' (and then the whole path), parents first. */
  for (char *p = buf + 1;; p++) {
    if (*p != '/' && *p != '\0')
      continue;
    char saved = *p;
    *p = '\0';
    uv_fs_t req;
    int r = uv_fs_mkdir(NULL, &req, buf, mode, NULL);
    uv_fs_req_cleanup(&req);
    if (r == UV_EEXIST)
      r = is_directory(buf) ? 0 : saved == '\0' ? UV_EEXIST : UV_ENOTDIR;
    *p = saved;
    if (r < 0) {
      rc = r;
      break;
    }
    if (saved == '\0')
      break;
  }
  free(buf);
  return rc;
}

/* nil, "ECODE: message: what", "ECODE" */
static int push_failure(lua_State *L, int code, const char *what) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s: %s", uv_err_name(code), uv_strerror(code), what);
  lua_pushstring(L, uv_err_name(code));
  return 3;
}

static int l_mkdir_p(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer mode = luaL_optinteger(L, 2, 0777);
  luaL_argcheck(L, mode >= 0 && mode <= 07777, 2, "mode must be between 0 and 07777");
  int r = fs_mkdir_p(path, (int)mode);
  if (r < 0)
    return push_failure(L, r, path);
  lua_pushboolean(L, 1);
  return 1;
}

static const char *type_name(uint64_t mode) {
  switch (mode & S_IFMT) {
  case S_IFREG: return "file";
  case S_IFDIR: return "directory";
  case S_IFLNK: return "link";
  case S_IFIFO: return "fifo";
  case S_IFSOCK: return "socket";
  case S_IFCHR: return "char";
  case S_IFBLK: return "block";
  default: return "unknown";
  }
}

static void set_number(lua_State *L, const char *key, lua_Number v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, key);
}

static int l_stat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  uv_fs_t req;
  int r = uv_fs_stat(NULL, &req, path, NULL);
  if (r < 0) {
    uv_fs_req_cleanup(&req);
    return push_failure(L, r, path);
  }
  const uv_stat_t *st = &req.statbuf;
  lua_createtable(L, 0, 10);
  lua_pushstring(L, type_name(st->st_mode));
  lua_setfield(L, -2, "type");
  set_number(L, "mode", (lua_Number)st->st_mode);
  set_number(L, "perm", (lua_Number)(st->st_mode & 07777));
  set_number(L, "size", (lua_Number)st->st_size);
  set_number(L, "ino", (lua_Number)st->st_ino);
  set_number(L, "dev", (lua_Number)st->st_dev);
  set_number(L, "nlink", (lua_Number)st->st_nlink);
  set_number(L, "uid", (lua_Number)st->st_uid);
  set_number(L, "gid", (lua_Number)st->st_gid);
  set_number(L, "mtime", (lua_Number)st->st_mtim.tv_sec + (lua_Number)st->st_mtim.tv_nsec / 1e9);
  uv_fs_req_cleanup(&req);
  return 1;
}

static int l_copyfile(lua_State *L) {
  const char *src = luaL_checkstring(L, 1);
  const char *dst = luaL_checkstring(L, 2);
  int flags = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "excl");
    if (lua_toboolean(L, -1))
      flags |= UV_FS_COPYFILE_EXCL;
    lua_pop(L, 1);
  }
  uv_fs_t req;
  int r = uv_fs_copyfile(NULL, &req, src, dst, flags, NULL);
  uv_fs_req_cleanup(&req);
  if (r < 0) {
    lua_pushfstring(L, "%s -> %s", src, dst);
    return push_failure(L, r, lua_tostring(L, -1));
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_cwd(lua_State *L) {
  char small[1024];
  size_t size = sizeof small;
  int r = uv_cwd(small, &size);
  if (r == 0) {
    lua_pushlstring(L, small, size);
    return 1;
  }
  if (r != UV_ENOBUFS)
    return push_failure(L, r, "current directory");
  /* size now holds the length needed, the terminating NUL included */
  size_t need = size;
  char *big = malloc(need);
  if (!big)
    return luaL_error(L, "fs.cwd: out of memory");
  r = uv_cwd(big, &need);
  if (r == 0)
    lua_pushlstring(L, big, need);
  free(big);
  return r == 0 ? 1 : push_failure(L, r, "current directory");
}

int luaopen_scimrun_fs(lua_State *L) {
  static const luaL_Reg funcs[] = {{"mkdir_p", l_mkdir_p},
                                   {"stat", l_stat},
                                   {"copyfile", l_copyfile},
                                   {"cwd", l_cwd},
                                   {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, funcs);
  return 1;
}
