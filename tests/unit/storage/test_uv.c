/*
 * The WAL store inside a libuv loop, the way the node's env will run it: a
 * uv_poll_t watches qraft_storage_fd, and completions run on the loop
 * thread from the poll callback. Writes are pipelined from a timer so that
 * several are in flight at once; the test proves every callback runs on the
 * loop thread, in order, and that the loop exits when the work is done.
 */
#include "cmocka_all.h"

#include "storage_helpers.h"

#include <qraft/storage.h>

#include <pthread.h>
#include <uv.h>

enum { WRITES = 200, INFLIGHT = 16 };

typedef struct loop_ctx {
  qraft_storage *s;
  uv_poll_t poll;
  uv_timer_t timer;
  pthread_t loop_thread;
  qraft_storage_write w[WRITES];
  qraft_entry e[WRITES];
  uint8_t payload[64];
  int submitted, completed, wrong_thread, out_of_order;
} loop_ctx;

static void on_done(qraft_storage_write *w, int status) {
  loop_ctx *c = w->data;
  int i = (int)(w - c->w);
  if (status != 0) {
    fail_msg("write %d failed: %s", i, qraft_strerror(status));
  }
  if (!pthread_equal(pthread_self(), c->loop_thread)) {
    c->wrong_thread++;
  }
  if (i != c->completed) {
    c->out_of_order++;
  }
  c->completed++;
  if (c->completed == WRITES) {
    uv_close((uv_handle_t *)&c->poll, NULL);
    uv_close((uv_handle_t *)&c->timer, NULL);
  }
}

static void on_readable(uv_poll_t *p, int status, int events) {
  (void)events;
  assert_int_equal(status, 0);
  loop_ctx *c = p->data;
  qraft_storage_poll(c->s);
}

static void on_timer(uv_timer_t *t) {
  loop_ctx *c = t->data;
  while (c->submitted < WRITES && c->submitted - c->completed < INFLIGHT) {
    int i = c->submitted++;
    c->e[i] = (qraft_entry){.term = 1, .index = (uint64_t)i + 1,
                            .data = {c->payload, sizeof c->payload, NULL}};
    c->w[i] = (qraft_storage_write){.entries = &c->e[i], .entries_n = 1,
                                    .cb = on_done, .data = c};
    assert_int_equal(qraft_storage_submit(c->s, &c->w[i], NULL), 0);
  }
}

static void completions_run_on_the_loop_thread_in_order(void **st) {
  (void)st;
  char *dir = th_mkdtemp();
  loop_ctx *c = calloc(1, sizeof *c);
  qraft_err err;
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_storage_wal_open(dir, NULL, &c->s, &err), 0);
  int fd = qraft_storage_fd(c->s);
  assert_true(fd >= 0);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  c->loop_thread = pthread_self();
  assert_int_equal(uv_poll_init(&loop, &c->poll, fd), 0);
  c->poll.data = c;
  assert_int_equal(uv_poll_start(&c->poll, UV_READABLE, on_readable), 0);
  assert_int_equal(uv_timer_init(&loop, &c->timer), 0);
  c->timer.data = c;
  assert_int_equal(uv_timer_start(&c->timer, on_timer, 0, 1), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(c->completed, WRITES);
  assert_int_equal(c->wrong_thread, 0);
  assert_int_equal(c->out_of_order, 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  qraft_storage_state s;
  qraft_storage_state_get(c->s, &s, NULL);
  assert_int_equal(s.last_index, WRITES);
  qraft_storage_close(c->s);
  free(c);
  th_rmdir(dir);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(completions_run_on_the_loop_thread_in_order),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
