/*
 * sha256: SHA-256 from OpenSSL's libcrypto (EVP), for input fingerprints and policy snapshot
 * hashes. Linked explicitly (CMake's OpenSSL::Crypto), not reached through libcurl.
 *
 * Lua module scimrun.sha256:
 *   sha256.hex(s) -> 64 lowercase hex digits of SHA-256(s)
 *   sha256.new() -> h   streaming: h:update(s) -> h (chainable), h:hex() -> hex digits.
 *       hex() ends the hash (later calls return the same digits); update after hex raises.
 * Failures of OpenSSL itself (no memory, no provider) raise: there is nothing to retry.
 */
#ifndef SCIMRUN_SHA256_H
#define SCIMRUN_SHA256_H

#include <lua.h>
#include <stddef.h>

/* Writes the 64 hex digits of SHA-256(data) and a NUL into out; 0 on success, -1 on failure. */
int sha256_hex(const void *data, size_t len, char out[65]);

int luaopen_scimrun_sha256(lua_State *L);

#endif
