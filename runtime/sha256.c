/* sha256.c: SHA-256 with OpenSSL's EVP interface, one-shot and streaming (see sha256.h). */
#include "sha256.h"

#include <lauxlib.h>
#include <openssl/evp.h>

#define SHA256_MT "scimrun.sha256"

typedef struct {
  EVP_MD_CTX *ctx; /* NULL once finished (or when init failed) */
  char hex[65];    /* the digest once finished */
} sha256_state;

static void to_hex(const unsigned char *md, unsigned int n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (unsigned int i = 0; i < n; i++) {
    out[2 * i] = digits[md[i] >> 4];
    out[2 * i + 1] = digits[md[i] & 15];
  }
  out[2 * n] = '\0';
}

int sha256_hex(const void *data, size_t len, char out[65]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1 || n != 32)
    return -1;
  to_hex(md, n, out);
  return 0;
}

static int l_hex(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char out[65];
  if (sha256_hex(s, len, out) != 0)
    return luaL_error(L, "sha256: OpenSSL could not compute the digest");
  lua_pushlstring(L, out, 64);
  return 1;
}

static int l_new(lua_State *L) {
  sha256_state *st = lua_newuserdata(L, sizeof *st);
  st->ctx = NULL;
  st->hex[0] = '\0';
  luaL_getmetatable(L, SHA256_MT);
  lua_setmetatable(L, -2);
  st->ctx = EVP_MD_CTX_new();
  if (!st->ctx || EVP_DigestInit_ex(st->ctx, EVP_sha256(), NULL) != 1)
    return luaL_error(L, "sha256: OpenSSL could not start a digest");
  return 1;
}

static int l_update(lua_State *L) {
  sha256_state *st = luaL_checkudata(L, 1, SHA256_MT);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  if (!st->ctx)
    return luaL_error(L, "sha256: update after hex()");
  if (EVP_DigestUpdate(st->ctx, s, len) != 1)
    return luaL_error(L, "sha256: OpenSSL could not update the digest");
  lua_settop(L, 1);
  return 1;
}

static int l_finish(lua_State *L) {
  sha256_state *st = luaL_checkudata(L, 1, SHA256_MT);
  if (st->ctx) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    int ok = EVP_DigestFinal_ex(st->ctx, md, &n) == 1 && n == 32;
    EVP_MD_CTX_free(st->ctx);
    st->ctx = NULL;
    if (!ok)
      return luaL_error(L, "sha256: OpenSSL could not finish the digest");
    to_hex(md, n, st->hex);
  }
  lua_pushlstring(L, st->hex, 64);
  return 1;
}

static int l_gc(lua_State *L) {
  sha256_state *st = luaL_checkudata(L, 1, SHA256_MT);
  EVP_MD_CTX_free(st->ctx);
  st->ctx = NULL;
  return 0;
}

int luaopen_scimrun_sha256(lua_State *L) {
  static const luaL_Reg methods[] = {{"update", l_update}, {"hex", l_finish}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"hex", l_hex}, {"new", l_new}, {NULL, NULL}};
  if (luaL_newmetatable(L, SHA256_MT)) {
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_newtable(L);
  luaL_register(L, NULL, funcs);
  return 1;
}
