/*
 * qraft/assert.h: always-on assertions for internal invariants.
 *
 * A broken invariant means this process's state is wrong; a Raft node that
 * runs on with wrong state can break the whole cluster. So the assertion
 * stays on in every build: it prints the message with file:line and function,
 * a backtrace, calls the user's hook (to flush logs or write a crash marker),
 * and aborts.
 *
 * Bad input from outside (a peer, a client, the disk) is never asserted on:
 * it is an error code returned to the caller (see qraft/error.h).
 */
#ifndef QRAFT_ASSERT_H
#define QRAFT_ASSERT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Called once, after the message and backtrace are printed and before
 * abort(). `msg` is the formatted one-line message. The hook must not return
 * into qraft; whatever it does, abort() follows. */
typedef void (*qraft_assert_hook_cb)(const char *msg, void *ud);

/* Installs the process-wide hook (NULL to remove). Call before starting
 * threads; not synchronized. */
void qraft_assert_set_hook(qraft_assert_hook_cb hook_cb, void *ud);

#ifdef __cplusplus
[[noreturn]]
#else
_Noreturn
#endif
void qraft__assert_fail(const char *expr, const char *file, int line,
                                  const char *func, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#define QRAFT_ASSERT(cond)                                                     \
  ((cond) ? (void)0                                                            \
          : qraft__assert_fail(#cond, __FILE__, __LINE__, __func__, NULL))

/* With a printf-style explanation of the values involved. */
#define QRAFT_ASSERTF(cond, ...)                                               \
  ((cond) ? (void)0                                                            \
          : qraft__assert_fail(#cond, __FILE__, __LINE__, __func__,            \
                               __VA_ARGS__))

/* Marks code that must never run. */
#define QRAFT_UNREACHABLE()                                                    \
  qraft__assert_fail("unreachable", __FILE__, __LINE__, __func__, NULL)

#ifdef __cplusplus
}
#endif
#endif
