/*
 * fault.c: named fault points for tests (see fault.h). Process-wide, guarded
 * by one mutex that is taken only while some point is armed.
 */
#include "storage/fault.h"

#include <qraft/assert.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#define FAULT_POINTS_MAX 16

typedef struct fault_point {
  const char *name; /* static string */
  uint64_t after;
  uint64_t times; /* 0: forever */
  int code;
  bool armed;
  uint64_t fired;
} fault_point;

static pthread_mutex_t fault_mu = PTHREAD_MUTEX_INITIALIZER;
static fault_point fault_points[FAULT_POINTS_MAX];
static atomic_int fault_any;

static fault_point *fault_find(const char *name, bool add) {
  for (int i = 0; i < FAULT_POINTS_MAX; i++) {
    if (fault_points[i].name != NULL &&
        strcmp(fault_points[i].name, name) == 0) {
      return &fault_points[i];
    }
  }
  if (!add) {
    return NULL;
  }
  for (int i = 0; i < FAULT_POINTS_MAX; i++) {
    if (fault_points[i].name == NULL) {
      fault_points[i].name = name;
      return &fault_points[i];
    }
  }
  QRAFT_ASSERTF(false, "more than %d fault points", FAULT_POINTS_MAX);
  return NULL;
}

int qraft__fault(const char *name) {
  if (atomic_load_explicit(&fault_any, memory_order_acquire) == 0) {
    return 0;
  }
  int rc = 0;
  pthread_mutex_lock(&fault_mu);
  fault_point *p = fault_find(name, false);
  if (p != NULL && p->armed) {
    if (p->after > 0) {
      p->after--;
    } else {
      rc = p->code;
      p->fired++;
      if (p->times > 0 && --p->times == 0) {
        p->armed = false;
      }
    }
  }
  pthread_mutex_unlock(&fault_mu);
  return rc;
}

void qraft__fault_arm(const char *name, uint64_t after, int code,
                      uint64_t times) {
  QRAFT_ASSERT(code < 0);
  pthread_mutex_lock(&fault_mu);
  fault_point *p = fault_find(name, true);
  p->after = after;
  p->code = code;
  p->times = times;
  p->armed = true;
  pthread_mutex_unlock(&fault_mu);
  atomic_store_explicit(&fault_any, 1, memory_order_release);
}

uint64_t qraft__fault_fired(const char *name) {
  pthread_mutex_lock(&fault_mu);
  fault_point *p = fault_find(name, false);
  uint64_t n = p != NULL ? p->fired : 0;
  pthread_mutex_unlock(&fault_mu);
  return n;
}

void qraft__fault_reset(void) {
  pthread_mutex_lock(&fault_mu);
  memset(fault_points, 0, sizeof fault_points);
  pthread_mutex_unlock(&fault_mu);
  atomic_store_explicit(&fault_any, 0, memory_order_release);
}
