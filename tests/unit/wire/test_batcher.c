/* The per-peer batcher and the buffer pool. */
#include "cmocka_all.h"
#include "wire_fixtures.h"

#include <qraft/wire.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct sent {
  qraft_buf *frames[64];
  int n;
  int fail_with;
} sent;

static int on_send(qraft_buf *frame, void *ud) {
  sent *s = ud;
  assert_true(s->n < 64);
  s->frames[s->n++] = frame;
  return s->fail_with;
}

static void sent_free(sent *s) {
  for (int i = 0; i < s->n; i++) {
    qraft_buf_unref(s->frames[i]);
  }
  s->n = 0;
}

/* Decodes frame i and returns its batch. */
static qraft_wire_batch *decode_sent(sent *s, int i) {
  qraft_wire_batch *batch = NULL;
  qraft_buf *f = s->frames[i];
  assert_int_equal(qraft_wire_frame_decode(f, f->data, f->len, NULL, &batch,
                                           NULL), 0);
  return batch;
}

static void messages_wait_for_the_end_of_the_turn(void **st) {
  (void)st;
  sent s = {0};
  qraft_wire_batcher b;
  qraft_wire_batcher_init(&b, 2, 5, NULL, NULL, on_send, &s);
  assert_false(qraft_wire_batcher_pending(&b));
  qraft_message m = fx_heartbeat(2);
  for (int i = 0; i < 10; i++) {
    m.commit = (uint64_t)i;
    assert_int_equal(qraft_wire_batcher_add(&b, &m, NULL), 0);
  }
  qraft_message full = fx_full_message();
  assert_int_equal(qraft_wire_batcher_add(&b, &full, NULL), 0);
  assert_int_equal(s.n, 0);
  assert_true(qraft_wire_batcher_pending(&b));
  assert_int_equal(qraft_wire_batcher_flush(&b), 0);
  assert_false(qraft_wire_batcher_pending(&b));
  assert_int_equal(qraft_wire_batcher_flush(&b), 0); /* nothing more */
  assert_int_equal(s.n, 1);
  qraft_wire_batch *batch = decode_sent(&s, 0);
  assert_int_equal(batch->group_id, 5);
  assert_int_equal(batch->msgs_n, 11);
  for (int i = 0; i < 10; i++) {
    assert_int_equal(batch->msgs[i].commit, i);
  }
  assert_true(fx_message_eq(&full, &batch->msgs[10]));
  qraft_wire_batch_free(batch);
  assert_int_equal(b.frames_sent, 1);
  assert_int_equal(b.msgs_sent, 11);
  sent_free(&s);
}

static void full_frames_go_out_before_the_limit_breaks(void **st) {
  (void)st;
  sent s = {0};
  qraft_wire_limits lim = QRAFT_WIRE_LIMITS_DEFAULT;
  lim.frame_messages_max = 4;
  qraft_wire_batcher b;
  qraft_wire_batcher_init(&b, 2, 5, &lim, NULL, on_send, &s);
  qraft_message m = fx_heartbeat(2);
  for (int i = 0; i < 10; i++) {
    assert_int_equal(qraft_wire_batcher_add(&b, &m, NULL), 0);
  }
  assert_int_equal(qraft_wire_batcher_flush(&b), 0);
  assert_int_equal(s.n, 3); /* 4 + 4 + 2 */
  size_t total = 0;
  for (int i = 0; i < s.n; i++) {
    qraft_wire_batch *batch = decode_sent(&s, i);
    assert_true(batch->msgs_n <= 4);
    total += batch->msgs_n;
    qraft_wire_batch_free(batch);
  }
  assert_int_equal(total, 10);
  sent_free(&s);

  /* by bytes: each frame stays within frame_bytes_max, and frames grow
   * their buffer past the first 4 KiB */
  lim = QRAFT_WIRE_LIMITS_DEFAULT;
  lim.frame_bytes_max = 10000;
  qraft_wire_batcher_init(&b, 2, 5, &lim, NULL, on_send, &s);
  static uint8_t payload[1000];
  qraft_entry e = {.term = 1, .index = 1,
                   .data = {.data = payload, .len = sizeof payload}};
  qraft_message app = {.type = QRAFT_MSG_APPEND, .to = 2, .entries = &e,
                       .entries_n = 1};
  for (int i = 0; i < 25; i++) {
    assert_int_equal(qraft_wire_batcher_add(&b, &app, NULL), 0);
  }
  assert_int_equal(qraft_wire_batcher_flush(&b), 0);
  assert_int_equal(s.n, 3);
  for (int i = 0; i < s.n; i++) {
    assert_true(s.frames[i]->len - 4 <= 10000);
    qraft_wire_batch *batch = decode_sent(&s, i);
    qraft_wire_batch_free(batch);
  }
  sent_free(&s);

  /* by entries: 3-entry appends under a 5-entry limit go one per frame */
  lim = QRAFT_WIRE_LIMITS_DEFAULT;
  lim.frame_entries_max = 5;
  qraft_wire_batcher_init(&b, 2, 5, &lim, NULL, on_send, &s);
  qraft_entry three[3] = {{.index = 1}, {.index = 2}, {.index = 3}};
  qraft_message app3 = {.type = QRAFT_MSG_APPEND, .to = 2, .entries = three,
                        .entries_n = 3};
  for (int i = 0; i < 4; i++) {
    assert_int_equal(qraft_wire_batcher_add(&b, &app3, NULL), 0);
  }
  assert_int_equal(qraft_wire_batcher_flush(&b), 0);
  assert_int_equal(s.n, 4);
  for (int i = 0; i < s.n; i++) {
    qraft_wire_batch *batch = decode_sent(&s, i);
    assert_int_equal(batch->entries_n, 3);
    qraft_wire_batch_free(batch);
  }
  sent_free(&s);
  lim.frame_entries_max = 2; /* more entries than a frame holds */
  qraft_wire_batcher_init(&b, 2, 5, &lim, NULL, on_send, &s);
  assert_int_equal(qraft_wire_batcher_add(&b, &app3, NULL), QRAFT_ELIMIT);

  /* a message larger than any frame is refused, nothing sent */
  lim = QRAFT_WIRE_LIMITS_DEFAULT;
  lim.frame_bytes_max = 500;
  qraft_wire_batcher_init(&b, 2, 5, &lim, NULL, on_send, &s);
  assert_int_equal(qraft_wire_batcher_add(&b, &app, NULL), QRAFT_ELIMIT);
  assert_false(qraft_wire_batcher_pending(&b));
}

static void a_failed_send_is_reported(void **st) {
  (void)st;
  sent s = {.fail_with = -EPIPE};
  qraft_wire_batcher b;
  qraft_wire_batcher_init(&b, 2, 5, NULL, NULL, on_send, &s);
  qraft_message m = fx_heartbeat(2);
  assert_int_equal(qraft_wire_batcher_add(&b, &m, NULL), 0);
  assert_int_equal(qraft_wire_batcher_flush(&b), -EPIPE);
  assert_int_equal(s.n, 1); /* the frame was handed over all the same */
  sent_free(&s);
  /* close drops what is pending */
  assert_int_equal(qraft_wire_batcher_add(&b, &m, NULL), 0);
  qraft_wire_batcher_close(&b);
  assert_false(qraft_wire_batcher_pending(&b));
}

static void pooled_buffers_come_back(void **st) {
  (void)st;
  qraft_wire_pool *pool = NULL;
  assert_int_equal(qraft_wire_pool_new(0, 4, &pool), QRAFT_ECONFIG);
  assert_int_equal(qraft_wire_pool_new(1024, 2, &pool), 0);
  qraft_buf *a = qraft_wire_pool_get(pool, 100);
  qraft_buf *b = qraft_wire_pool_get(pool, 1024);
  qraft_buf *c = qraft_wire_pool_get(pool, 1024);
  qraft_buf *big = qraft_wire_pool_get(pool, 5000); /* not pooled */
  assert_true(a->cap == 1024 && big->cap >= 5000 && a->len == 0);
  uint8_t *block = a->data;
  qraft_buf_unref(a);
  qraft_buf_unref(b);
  qraft_buf_unref(c); /* the pool keeps 2 */
  qraft_buf_unref(big);
  assert_int_equal(qraft_wire_pool_idle(pool), 2);
  qraft_buf *d = qraft_wire_pool_get(pool, 10);
  assert_int_equal(qraft_wire_pool_idle(pool), 1);
  (void)block;
  /* a frame encoded into the pool */
  qraft_message m = fx_heartbeat(2);
  qraft_buf *f = NULL;
  assert_int_equal(qraft_wire_frame_encode_buf(1, &m, 1, NULL, pool, &f, NULL), 0);
  assert_int_equal(qraft_wire_pool_idle(pool), 0);
  /* buffers outlive the pool */
  qraft_wire_pool_free(pool);
  qraft_wire_batch *batch = NULL;
  assert_int_equal(qraft_wire_frame_decode(f, f->data, f->len, NULL, &batch,
                                           NULL), 0);
  qraft_buf_unref(f);
  assert_int_equal(batch->msgs[0].commit, 100);
  qraft_wire_batch_free(batch);
  qraft_buf_unref(d);
}

static void *release_all(void *arg) {
  qraft_buf **bufs = arg;
  for (int i = 0; i < 100; i++) {
    qraft_buf_unref(bufs[i]);
  }
  return NULL;
}

static void pool_takes_buffers_back_from_other_threads(void **st) {
  (void)st;
  qraft_wire_pool *pool = NULL;
  assert_int_equal(qraft_wire_pool_new(256, 64, &pool), 0);
  static qraft_buf *bufs[4][100];
  for (int round = 0; round < 5; round++) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
      for (int j = 0; j < 100; j++) {
        bufs[i][j] = qraft_wire_pool_get(pool, 200);
        assert_non_null(bufs[i][j]);
        bufs[i][j]->data[0] = (uint8_t)j;
      }
    }
    for (int i = 0; i < 4; i++) {
      assert_int_equal(pthread_create(&t[i], NULL, release_all, bufs[i]), 0);
    }
    if (round == 4) {
      qraft_wire_pool_free(pool); /* while the threads still release */
    }
    for (int i = 0; i < 4; i++) {
      pthread_join(t[i], NULL);
    }
    if (round < 4) {
      assert_int_equal(qraft_wire_pool_idle(pool), 64);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(messages_wait_for_the_end_of_the_turn),
      cmocka_unit_test(full_frames_go_out_before_the_limit_breaks),
      cmocka_unit_test(a_failed_send_is_reported),
      cmocka_unit_test(pooled_buffers_come_back),
      cmocka_unit_test(pool_takes_buffers_back_from_other_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
