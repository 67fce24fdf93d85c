/* utf8_check.c: UTF-8 validation for Lua (see utf8_check.h). */
#include "utf8_check.h"

#include <lauxlib.h>
#include <stdint.h>
#include <string.h>

/* Length of the valid sequence starting at s[i] (a byte >= 0x80), or 0. */
static size_t sequence_length(const unsigned char *s, size_t i, size_t len) {
  unsigned c = s[i];
  unsigned lo = 0x80, hi = 0xBF; /* bounds of the second byte */
  size_t n;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0)
      lo = 0xA0; /* overlong */
    else if (c == 0xED)
      hi = 0x9F; /* surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0)
      lo = 0x90; /* overlong */
    else if (c == 0xF4)
      hi = 0x8F; /* above U+10FFFF */
  } else {
    return 0;
  }
  if (i + 1 >= len || s[i + 1] < lo || s[i + 1] > hi)
    return 0;
  for (size_t k = 2; k < n; k++)
    if (i + k >= len || s[i + k] < 0x80 || s[i + k] > 0xBF)
      return 0;
  return n;
}

size_t utf8_invalid_at(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    /* ASCII runs eight bytes at a time: most of a SCIM body */
    while (i + 8 <= len) {
      uint64_t w;
      memcpy(&w, s + i, sizeof w);
      if (w & UINT64_C(0x8080808080808080))
        break;
      i += 8;
    }
    if (i >= len)
      break;
    if (s[i] < 0x80) {
      i++;
      continue;
    }
    size_t n = sequence_length(s, i, len);
    if (n == 0)
      return i + 1;
    i += n;
  }
  return 0;
}

static int l_invalid_at(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_Integer init = luaL_optinteger(L, 2, 1);
  if (init < 1)
    init = 1;
  size_t from = (size_t)init - 1;
  size_t at = from < len ? utf8_invalid_at((const unsigned char *)s + from, len - from) : 0;
  if (at == 0)
    lua_pushnil(L);
  else
    lua_pushnumber(L, (lua_Number)(at + from));
  return 1;
}

int luaopen_scimrun_utf8(lua_State *L) {
  static const luaL_Reg funcs[] = {{"invalid_at", l_invalid_at}, {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, funcs);
  return 1;
}
