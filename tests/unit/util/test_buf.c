/* Reference-counted buffers and slices, including concurrent release. */
#include "cmocka_all.h"

#include <qraft/buf.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static int released;
static void on_release(void *data, size_t cap, void *ud) {
  assert_int_equal(cap, 64);
  assert_ptr_equal(ud, &released);
  free(data);
  released++;
}

static void last_unref_releases_the_block(void **st) {
  (void)st;
  released = 0;
  void *mem = malloc(64);
  qraft_buf *b = qraft_buf_wrap(mem, 64, on_release, &released);
  assert_non_null(b);
  assert_int_equal(b->len, 64);
  qraft_slice s1 = qraft_slice_of(b, b->data + 8, 16);
  qraft_slice s2 = qraft_slice_ref(s1);
  assert_int_equal(qraft_buf_refs(b), 3);
  qraft_buf_unref(b);
  assert_int_equal(released, 0);
  qraft_slice_release(&s1);
  assert_null(s1.data);
  assert_int_equal(released, 0);
  qraft_slice_release(&s2);
  assert_int_equal(released, 1);
}

static void copy_holds_the_bytes(void **st) {
  (void)st;
  qraft_buf *b = qraft_buf_copy("hello", 5);
  assert_non_null(b);
  assert_int_equal(b->len, 5);
  assert_memory_equal(b->data, "hello", 5);
  qraft_buf_unref(b);
  qraft_buf_unref(NULL);
  qraft_slice s = qraft_slice_of(NULL, "static", 6);
  assert_null(s.owner);
  qraft_slice_release(&s);
}

static void references_taken_and_dropped_in_bulk(void **st) {
  (void)st;
  released = 0;
  qraft_buf *b = qraft_buf_wrap(malloc(64), 64, on_release, &released);
  assert_ptr_equal(qraft_buf_ref_n(b, 5), b);
  assert_int_equal(qraft_buf_refs(b), 6);
  qraft_buf_ref_n(b, 0);
  qraft_buf_unref_n(b, 0);
  qraft_buf_unref_n(NULL, 3);
  qraft_buf_unref_n(b, 4);
  assert_int_equal(qraft_buf_refs(b), 2);
  assert_int_equal(released, 0);
  qraft_buf_unref_n(b, 2);
  assert_int_equal(released, 1);
}

static void *drop_refs(void *arg) {
  qraft_buf *b = arg;
  for (int i = 0; i < 10000; i++) {
    qraft_buf_ref(b);
    qraft_buf_unref(b);
  }
  qraft_buf_unref(b);
  return NULL;
}

static void references_dropped_on_many_threads(void **st) {
  (void)st;
  released = 0;
  qraft_buf *b = qraft_buf_wrap(malloc(64), 64, on_release, &released);
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    qraft_buf_ref(b);
    assert_int_equal(pthread_create(&th[i], NULL, drop_refs, b), 0);
  }
  qraft_buf_unref(b);
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
  }
  assert_int_equal(released, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(last_unref_releases_the_block),
      cmocka_unit_test(references_taken_and_dropped_in_bulk),
      cmocka_unit_test(copy_holds_the_bytes),
      cmocka_unit_test(references_dropped_on_many_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
