/* SPDX-License-Identifier: MIT */
/*
 * Feeds arbitrary bytes, as the plaintext a donor sends, to the pager's
 * frame handling (transport-tcp.c's consume_frames/handle_frame: request
 * matching, read completions copying pages, notifications) and the reply
 * decoders its synchronous calls use. transport-tcp.c is included so its
 * static functions are reached and instrumented without any hook in the
 * production build. The first byte picks which requests are outstanding
 * (ids 1..8, ops cycling from a start the byte chooses; read batches of
 * 1..64 pages), so replies match, mismatch, or answer the wrong op.
 */
#include "../../../transport/transport-tcp.c"

static uint8_t pages[DONOR_MAX_BATCH][PAGE_SIZE_4K];

static void fuzz_notify(struct donor_conn *c, const struct donor_notification *n, void *opaque)
{
	/* Touch every id the decoder said is there. */
	volatile uint32_t sum = 0;

	for (uint32_t i = 0; i < n->nslabs; i++)
		sum += n->slabs[i];
	(void)c, (void)opaque, (void)sum;
}

/* What the synchronous callers do with a reply payload. */
static void decode_sync(const struct pend *p)
{
	struct donor_stats_reply st;
	struct donor_list_reply lr;
	struct donor_auth_reply ar;
	uint8_t nonce[DONOR_NONCE_LEN];
	uint32_t v;

	if (!p->done || p->status != 0)
		return;
	switch (p->op) {
	case DONOR_OP_ALLOC_SLAB:
		donor_dec_u32(p->reply.data, p->reply.len, &v);
		break;
	case DONOR_OP_STATS:
		donor_dec_stats_reply(p->reply.data, p->reply.len, &st);
		break;
	case DONOR_OP_LIST_SLABS:
		if (donor_dec_list_reply(p->reply.data, p->reply.len, &lr) == 0)
			for (uint32_t i = 0; i < lr.count; i++)
				v = donor_get_u32(lr.entries + 8 * i);
		break;
	case DONOR_OP_HELLO:
		donor_dec_hello_reply(p->reply.data, p->reply.len, nonce);
		break;
	case DONOR_OP_AUTH:
		donor_dec_auth_reply(p->reply.data, p->reply.len, &ar);
		break;
	default:
		break;
	}
	(void)v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t ops[] = { DONOR_OP_READ_PAGES, DONOR_OP_WRITE_PAGES, DONOR_OP_ALLOC_SLAB, DONOR_OP_STATS,
				       DONOR_OP_LIST_SLABS, DONOR_OP_PING,	 DONOR_OP_HELLO,      DONOR_OP_AUTH };
	struct pend *sync[8] = { 0 };
	struct tcp_conn *t;
	struct pend *p;
	size_t start = 0;
	uint8_t mode;

	if (size < 1)
		return 0;
	mode = data[0];
	data++;
	size--;
	log_set_level(LOG_LVL_ERR);
	t = calloc(1, sizeof(*t));
	if (!t)
		return 0;
	t->base.ops = &donor_tcp_ops;
	t->fd = t->evfd = -1;
	t->notify_cb = fuzz_notify;
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	TAILQ_INIT(&t->pending);
	TAILQ_INIT(&t->spare);
	if (donor_cq_init(&t->cq, 8 * DONOR_MAX_BATCH) < 0) {
		free(t);
		return 0;
	}
	pthread_mutex_lock(&t->lock);
	for (unsigned i = 0; i < 8; i++) {
		uint8_t op = ops[(i + (mode & 7)) % 8];
		p = pend_new(t, op);
		if (!p)
			break;
		p->sent = true;
		p->deadline = UINT64_MAX;
		if (op == DONOR_OP_READ_PAGES || op == DONOR_OP_WRITE_PAGES) {
			p->n = 1 + ((mode >> 3) * 7 + i) % DONOR_MAX_BATCH;
			donor_cq_reserve(&t->cq, p->n);
			for (unsigned k = 0; k < p->n; k++) {
				p->cookies[k] = k;
				p->pages[k] = pages[k];
			}
		} else {
			p->sync = true;
			sync[i] = p;
		}
	}
	pthread_mutex_unlock(&t->lock);

	consume_frames(t, data, &start, size);

	pthread_mutex_lock(&t->lock);
	/* Completed synchronous requests left the list; the rest are failed here. */
	fail_all(t, -ECANCELED);
	pthread_mutex_unlock(&t->lock);
	for (unsigned i = 0; i < 8; i++)
		if (sync[i]) {
			decode_sync(sync[i]);
			donor_buf_release(&sync[i]->reply);
			free(sync[i]);
		}
	{
		struct donor_completion out[64];
		while (donor_cq_pop(&t->cq, out, 64) > 0)
			;
	}
	while ((p = TAILQ_FIRST(&t->spare))) {
		TAILQ_REMOVE(&t->spare, p, link);
		donor_buf_release(&p->reply);
		free(p);
	}
	donor_cq_destroy(&t->cq);
	pthread_mutex_destroy(&t->lock);
	pthread_cond_destroy(&t->cond);
	free(t);
	return 0;
}
