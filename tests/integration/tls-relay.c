/* SPDX-License-Identifier: MIT */
/*
 * tls-relay: ends or starts the donor link's TLS so a test can see and
 * change the frames inside it, as a donor (who holds the key) could.
 *
 *   tls-relay accept-tls LISTEN_PORT TARGET_PORT KEY_FILE
 *     takes TLS connections (the donor's side of the handshake) and relays
 *     their plaintext to 127.0.0.1:TARGET_PORT;
 *   tls-relay connect-tls LISTEN_PORT TARGET_PORT KEY_FILE CLIENT_ID
 *     takes plain connections and relays them over TLS (the pager's side,
 *     offering CLIENT_ID) to 127.0.0.1:TARGET_PORT.
 *
 * One process per side, a thread per connection; a closed or broken side
 * closes the other. Prints "ready" once it listens. Test tool only.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "donor-tls.h"
#include "util.h"

#define BUF_SIZE (256u << 10)
#define HANDSHAKE_NS 10000000000ULL

struct relay {
	int tls_fd, plain_fd;
	struct donor_tls *tls;
	uint8_t *buf;
};

static struct donor_key key;
static const char *client_id;
static bool accept_tls;
static int target_port;

static int send_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int flush_cipher(struct relay *r)
{
	size_t n;
	while ((n = donor_tls_net_out(r->tls, r->buf, BUF_SIZE)) > 0)
		if (send_all(r->tls_fd, r->buf, n) < 0)
			return -1;
	return 0;
}

/* Ciphertext arrived: decrypt all of it and pass the plaintext on. */
static int from_tls(struct relay *r, uint8_t *in, size_t len)
{
	uint8_t *plain = r->buf;
	for (;;) {
		size_t took = donor_tls_net_in(r->tls, in, len);
		int n;
		in += took;
		len -= took;
		while ((n = donor_tls_read(r->tls, plain, BUF_SIZE)) > 0)
			if (send_all(r->plain_fd, plain, (size_t)n) < 0)
				return -1;
		if (n != -EAGAIN)
			return -1;
		if (flush_cipher(r) < 0) /* TLS may answer (key updates) */
			return -1;
		if (!len)
			return 0;
		if (!took)
			return -1;
	}
}

/* Plaintext arrived: encrypt and send it. */
static int from_plain(struct relay *r, const uint8_t *in, size_t len)
{
	while (len) {
		int w = donor_tls_write(r->tls, in, len);
		if (w < 0)
			return -1;
		in += w;
		len -= (size_t)w;
		if (flush_cipher(r) < 0)
			return -1;
	}
	return 0;
}

static int dial(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

static void *relay_main(void *arg)
{
	struct relay *r = arg;
	_cleanup_free_ uint8_t *in = malloc(BUF_SIZE);
	int out_fd = dial(target_port);
	int rc;

	r->buf = malloc(BUF_SIZE);
	if (accept_tls) {
		r->tls_fd = r->plain_fd; /* the accepted connection speaks TLS */
		r->plain_fd = out_fd;
		rc = donor_tls_new_server(&key, &r->tls);
	} else {
		r->tls_fd = out_fd;
		rc = donor_tls_new_client(&key, client_id, &r->tls);
	}
	if (!in || !r->buf || out_fd < 0 || rc < 0 ||
	    donor_tls_sock_handshake(r->tls, r->tls_fd, now_ns() + HANDSHAKE_NS) < 0)
		goto out;
	/* The handshake may have read records sent right behind it: pass them on before polling. */
	if (from_tls(r, in, 0) < 0)
		goto out;
	for (;;) {
		struct pollfd p[2] = { { .fd = r->tls_fd, .events = POLLIN }, { .fd = r->plain_fd, .events = POLLIN } };
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		for (int i = 0; i < 2; i++) {
			ssize_t n;
			if (!p[i].revents)
				continue;
			n = recv(p[i].fd, in, BUF_SIZE, 0);
			if (n <= 0)
				goto out;
			if ((i == 0 ? from_tls(r, in, (size_t)n) : from_plain(r, in, (size_t)n)) < 0)
				goto out;
		}
	}
out:
	if (r->tls_fd >= 0)
		close(r->tls_fd);
	if (r->plain_fd >= 0)
		close(r->plain_fd);
	donor_tls_free(r->tls);
	free(r->buf);
	free(r);
	return NULL;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int one = 1, ls;

	if (argc < 5 || (strcmp(argv[1], "accept-tls") != 0 && strcmp(argv[1], "connect-tls") != 0) ||
	    (strcmp(argv[1], "connect-tls") == 0 && argc < 6)) {
		fprintf(stderr, "usage: tls-relay accept-tls LISTEN_PORT TARGET_PORT KEY_FILE\n"
				"       tls-relay connect-tls LISTEN_PORT TARGET_PORT KEY_FILE CLIENT_ID\n");
		return 2;
	}
	accept_tls = strcmp(argv[1], "accept-tls") == 0;
	target_port = atoi(argv[3]);
	client_id = argc > 5 ? argv[5] : NULL;
	if (donor_key_load(argv[4], &key) < 0) {
		fprintf(stderr, "tls-relay: cannot load key file %s\n", argv[4]);
		return 1;
	}
	sa.sin_port = htons((uint16_t)atoi(argv[2]));
	ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 16) < 0) {
		perror("tls-relay: listen");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		pthread_t thr;
		struct relay *r;
		int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		r = calloc(1, sizeof(*r));
		if (!r) {
			close(fd);
			continue;
		}
		r->tls_fd = -1;
		r->plain_fd = fd; /* relay_main sorts out which side is which */
		if (pthread_create(&thr, NULL, relay_main, r) != 0) {
			close(fd);
			free(r);
			continue;
		}
		pthread_detach(thr);
	}
}
