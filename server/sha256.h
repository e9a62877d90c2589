/* SHA-256 (FIPS 180-4), for the registry's model checksums. Incremental:
 * init, update any number of times, final. */
#ifndef VKPT_SERVER_SHA256_H
#define VKPT_SERVER_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct srv_sha256 {
    uint32_t h[8];
    uint64_t bytes;  /* message length so far */
    uint8_t buf[64]; /* partial block */
    size_t n;        /* bytes in buf */
} srv_sha256;

void srv_sha256_init(srv_sha256 *c);
void srv_sha256_update(srv_sha256 *c, const void *data, size_t n);
void srv_sha256_final(srv_sha256 *c, uint8_t out[32]);
/* 64 lower-case hex digits and a NUL. */
void srv_sha256_hex(const uint8_t d[32], char out[65]);

#endif
