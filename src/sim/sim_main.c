/*
 * qraft-sim: runs the deterministic simulator (qraft/sim.h).
 *
 *   qraft-sim --seed S [--trace] [--summary]   replay one run
 *   --progress S    with --seeds or --regression: a progress line every S
 *                   seconds (seeds done, failures, seeds per second)
 *   --history FILE  with --seed: write the clients' history there as JSON
 *                   lines (docs/lincheck.md), for qraft-lincheck
 *   qraft-sim --seeds N [--start S] [--jobs J] run a range of seeds
 *   qraft-sim --regression FILE [--jobs J]     run the seeds listed in FILE
 *   --expect-fail   succeed only if some run fails (for canaries); stops at
 *                   the first failure
 *   --duration-ms D fix the virtual length of every run
 *   --full          the full-stack simulation (qraft_sim_full_run): real
 *                   nodes, QUIC transport, simulated disks
 *   --steady        with --full: every seed a steady one (a healthy
 *                   network, only stalls; leadership must not move
 *                   without a long stall of its leader)
 *
 * Every failure prints the one command that replays it, a run that stops
 * its process (a failed assertion) too: its worker is replaced and the
 * seeds after it still run. Exit status: 0 if
 * every run passed (or, with --expect-fail, if one failed), 1 otherwise,
 * 2 for bad usage.
 */
#include <qraft/sim.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <poll.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *prog = "qraft-sim";
static bool full;   /* --full: the full-stack simulator */
static bool steady; /* --steady: every full-stack seed a steady one */

static void usage(void) {
  fprintf(stderr,
          "usage: %s [--full] --seed S [--trace] [--summary] [--duration-ms D]\n"
          "                 [--history FILE]\n"
          "       %s [--full] --seeds N [--start S] [--jobs J] [--expect-fail]\n"
          "                 [--progress SECONDS]\n"
          "       %s [--full] --regression FILE [--jobs J]\n"
          "  --full  the full-stack simulation: real nodes, QUIC transport,\n"
          "          simulated disks (default: the Raft cores alone)\n"
          "  --steady  with --full: every seed a steady one (healthy network,\n"
          "          stalls only; leadership must not move without cause)\n",
          prog, prog, prog);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static FILE *history; /* --history */

static int run_one(uint64_t seed, uint64_t duration_ms, FILE *trace,
                   qraft_sim_core_result *res) {
  qraft_sim_core_opts opts = {.seed = seed, .duration_ms = duration_ms,
                              .trace = trace, .history = history,
                              .steady = steady};
  return full ? qraft_sim_full_run(&opts, res) : qraft_sim_core_run(&opts, res);
}

static void print_result(uint64_t seed, const qraft_sim_core_result *r,
                         bool summary) {
  if (r->ok) {
    printf("seed %" PRIu64 ": ok, trace hash %016" PRIx64 ", %" PRIu64
           " events, %" PRIu64 " virtual ms\n",
           seed, r->trace_hash, r->events, r->virtual_ms);
  } else {
    printf("seed %" PRIu64 ": FAILED [%s] %s\n", seed, r->checker, r->failure);
  }
  if (summary) {
    printf("  swarm: %s\n", r->swarm);
    printf("  elections won %" PRIu64 ", max term %" PRIu64
           ", max commit %" PRIu64 ", crashes %" PRIu64 ", partitions %" PRIu64
           ",\n  snapshots sent %" PRIu64 ", compactions %" PRIu64
           ", configuration changes %" PRIu64 ", transfers %" PRIu64
           ",\n  client ops ok %" PRIu64 ", unknown %" PRIu64
           ", failed %" PRIu64 ", messages %" PRIu64 " (%" PRIu64
           " dropped)\n",
           r->elections_won, r->max_term, r->max_commit, r->crashes,
           r->partitions, r->snapshots_sent, r->compactions, r->conf_changes,
           r->transfers, r->ops_ok, r->ops_info, r->ops_fail, r->messages,
           r->messages_dropped);
    if (r->snapshots_installed + r->snapshot_transfers_cut > 0) {
      printf("  snapshots installed %" PRIu64 ", transfers cut %" PRIu64
             ", restore steps %" PRIu64 " (entries waited %" PRIu64 ")\n",
             r->snapshots_installed, r->snapshot_transfers_cut,
             r->restore_steps, r->restore_waited);
    }
    if (r->disk_fulls > 0) {
      printf("  disk full %" PRIu64 ", writes failed for space %" PRIu64
             ", applies refused %" PRIu64 "\n",
             r->disk_fulls, r->writes_nospace, r->apply_refused);
    }
    if (r->compactions_stateless > 0) {
      printf("  stateless compactions %" PRIu64
             ", snapshots sent from the state %" PRIu64 "\n",
             r->compactions_stateless, r->sends_from_state);
    }
  }
}

/* Forks a worker that runs seeds[first], seeds[first + step], ... and
 * writes one line per seed to the pipe whose read end it returns in *fd. */
static pid_t spawn_worker(const uint64_t *seeds, size_t n, size_t first,
                          size_t step, uint64_t duration_ms,
                          bool stop_on_fail, int *fd) {
  int fds[2];
  if (pipe(fds) != 0) {
    perror("pipe");
    exit(2);
  }
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    exit(2);
  }
  if (pid == 0) {
    close(fds[0]);
    FILE *out = fdopen(fds[1], "w");
    for (size_t i = first; i < n; i += step) {
      qraft_sim_core_result r;
      double t_seed = now_s();
      if (run_one(seeds[i], duration_ms, NULL, &r) != 0) {
        fprintf(out, "%" PRIu64 " 0 ERR\n", seeds[i]);
        fflush(out);
        continue;
      }
      /* worker lines: SEED SECONDS ok HASH, or SEED SECONDS FAIL ... */
      t_seed = now_s() - t_seed;
      if (r.ok) {
        fprintf(out, "%" PRIu64 " %.3f ok %016" PRIx64 "\n", seeds[i],
                t_seed, r.trace_hash);
      } else {
        fprintf(out, "%" PRIu64 " %.3f FAIL %s %s\n", seeds[i], t_seed,
                r.checker, r.failure);
        if (stop_on_fail) {
          fflush(out);
          _exit(1);
        }
      }
      fflush(out);
    }
    fclose(out);
    _exit(0);
  }
  close(fds[1]);
  *fd = fds[0];
  return pid;
}

/* Runs seeds[] over `jobs` processes; returns how many failed. A worker
 * that dies in a run (an assertion stops the process) reports nothing for
 * it: its seed is printed as failed with its replay command, and a new
 * worker goes on with the seeds after it. */
static size_t run_many(const uint64_t *seeds, size_t n, int jobs,
                       uint64_t duration_ms, bool stop_on_fail,
                       double progress_s, const char *self) {
  if (jobs < 1) {
    jobs = 1;
  }
  pid_t pids[64];
  if (jobs > 64) {
    jobs = 64;
  }
  double t0 = now_s();
  size_t next_i[64]; /* the index in seeds[] of each worker's next seed */
  int fd0[64];
  for (int j = 0; j < jobs; j++) {
    next_i[j] = (size_t)j;
    pids[j] = spawn_worker(seeds, n, (size_t)j, (size_t)jobs, duration_ms,
                           stop_on_fail, &fd0[j]);
  }
  size_t failed = 0, done = 0;
  /* Read every worker's lines as they come (poll), so that a failure found
   * by any worker stops the others at once with --expect-fail. */
  struct pollfd pfd[64];
  char buf[64][4096];
  size_t buf_n[64] = {0};
  int open_n = jobs;
  for (int j = 0; j < jobs; j++) {
    pfd[j].fd = fd0[j];
    pfd[j].events = POLLIN;
  }
  bool stop = false;
  double slowest = 0, next_progress = t0 + progress_s;
  uint64_t slowest_seed = 0;
  while (open_n > 0 && !stop) {
    if (progress_s > 0 && now_s() >= next_progress) {
      double dt = now_s() - t0;
      printf("progress: %zu of %zu seeds, %zu failed, %.1f seeds/s, %.0f s\n",
             done, n, failed, dt > 0 ? (double)done / dt : 0.0, dt);
      fflush(stdout);
      next_progress += progress_s;
    }
    int wait_ms = -1;
    if (progress_s > 0) {
      double left = next_progress - now_s();
      wait_ms = left > 0 ? (int)(left * 1000) + 1 : 0;
    }
    if (poll(pfd, (nfds_t)jobs, wait_ms) < 0) {
      if (errno == EINTR) {
        continue;
      }
      perror("poll");
      exit(2);
    }
    for (int j = 0; j < jobs && !stop; j++) {
      if (pfd[j].fd < 0 || (pfd[j].revents & (POLLIN | POLLHUP)) == 0) {
        continue;
      }
      ssize_t r = read(pfd[j].fd, buf[j] + buf_n[j],
                       sizeof buf[j] - 1 - buf_n[j]);
      if (r <= 0) {
        close(pfd[j].fd);
        pfd[j].fd = -1;
        open_n--;
        if (next_i[j] < n && !stop) {
          /* it died in the run of seeds[next_i[j]] */
          int st = 0;
          waitpid(pids[j], &st, 0);
          pids[j] = -1;
          uint64_t seed = seeds[next_i[j]];
          failed++;
          done++;
          bool abrt = WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
          printf("FAILED seed %" PRIu64 ": FAIL %s the process stopped in "
                 "the run (%s %d%s)\n",
                 seed, abrt ? "abort" : "died",
                 WIFSIGNALED(st) ? "signal" : "exit status",
                 WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
                 abrt ? ": an assertion failed; the replay prints it" : "");
          printf("  replay: %s%s%s --seed %" PRIu64 " --trace\n", self,
                 full ? " --full" : "", steady ? " --steady" : "", seed);
          fflush(stdout);
          next_i[j] += (size_t)jobs;
          if (stop_on_fail) {
            stop = true;
          } else if (next_i[j] < n) {
            pids[j] = spawn_worker(seeds, n, next_i[j], (size_t)jobs,
                                   duration_ms, stop_on_fail, &pfd[j].fd);
            buf_n[j] = 0;
            open_n++;
          }
        }
        continue;
      }
      buf_n[j] += (size_t)r;
      char *nl;
      while (!stop && (nl = memchr(buf[j], '\n', buf_n[j])) != NULL) {
        *nl = '\0';
        const char *line = buf[j];
        done++;
        next_i[j] += (size_t)jobs;
        char *end;
        uint64_t seed = strtoull(line, &end, 10);
        double took = strtod(end, &end);
        if (took > slowest) {
          slowest = took;
          slowest_seed = seed;
        }
        if (strstr(line, " ok ") == NULL) {
          failed++;
          printf("FAILED seed %" PRIu64 ":%s\n", seed, end);
          printf("  replay: %s%s%s --seed %" PRIu64 " --trace\n", self,
                 full ? " --full" : "", steady ? " --steady" : "", seed);
          fflush(stdout);
          if (stop_on_fail) {
            stop = true;
          }
        }
        size_t used = (size_t)(nl - buf[j]) + 1;
        memmove(buf[j], buf[j] + used, buf_n[j] - used);
        buf_n[j] -= used;
      }
    }
  }
  if (stop) {
    for (int k = 0; k < jobs; k++) {
      if (pids[k] > 0) {
        kill(pids[k], SIGKILL);
      }
    }
  }
  for (int j = 0; j < jobs; j++) {
    if (pfd[j].fd >= 0) {
      close(pfd[j].fd);
    }
  }
  for (int j = 0; j < jobs; j++) {
    int st;
    if (pids[j] > 0) {
      waitpid(pids[j], &st, 0);
    }
  }
  double dt = now_s() - t0;
  printf("%zu runs, %zu failed, %.1f s, %.0f runs/minute\n", done, failed, dt,
         dt > 0 ? (double)done * 60.0 / dt : 0.0);
  if (done > 0) {
    printf("slowest seed %" PRIu64 ": %.2f s\n", slowest_seed, slowest);
  }
  if (!stop_on_fail && done != n) {
    printf("only %zu of %zu runs reported (a worker died)\n", done, n);
    failed += n - done;
  }
  return failed;
}

int main(int argc, char **argv) {
  uint64_t seed = 0, start = 1, count = 0, duration_ms = 0;
  double progress_s = 0;
  bool have_seed = false, trace = false, summary = false, expect_fail = false;
  const char *regression = NULL, *history_path = NULL;
  int jobs = 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--seed") == 0 && v) {
      seed = strtoull(v, NULL, 0);
      have_seed = true;
      i++;
    } else if (strcmp(a, "--seeds") == 0 && v) {
      count = strtoull(v, NULL, 0);
      i++;
    } else if (strcmp(a, "--start") == 0 && v) {
      start = strtoull(v, NULL, 0);
      i++;
    } else if (strcmp(a, "--jobs") == 0 && v) {
      jobs = atoi(v);
      i++;
    } else if (strcmp(a, "--duration-ms") == 0 && v) {
      duration_ms = strtoull(v, NULL, 0);
      i++;
    } else if (strcmp(a, "--progress") == 0 && v) {
      progress_s = strtod(v, NULL);
      i++;
    } else if (strcmp(a, "--history") == 0 && v) {
      history_path = v;
      i++;
    } else if (strcmp(a, "--regression") == 0 && v) {
      regression = v;
      i++;
    } else if (strcmp(a, "--full") == 0) {
      full = true;
    } else if (strcmp(a, "--steady") == 0) {
      steady = true;
    } else if (strcmp(a, "--trace") == 0) {
      trace = true;
    } else if (strcmp(a, "--summary") == 0) {
      summary = true;
    } else if (strcmp(a, "--expect-fail") == 0) {
      expect_fail = true;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage();
      return 0;
    } else {
      usage();
      return 2;
    }
  }
  const char *self = argv[0];
  if (steady && !full) {
    fprintf(stderr, "%s: --steady needs --full\n", prog);
    return 2;
  }
  if (history_path != NULL && (!have_seed || full)) {
    fprintf(stderr, "%s: --history needs --seed, without --full\n", prog);
    return 2;
  }
  if (history_path != NULL) {
    history = fopen(history_path, "w");
    if (history == NULL) {
      fprintf(stderr, "%s: %s: %s\n", prog, history_path, strerror(errno));
      return 2;
    }
  }
  if (have_seed) {
    qraft_sim_core_result r;
    if (run_one(seed, duration_ms, trace ? stdout : NULL, &r) != 0) {
      fprintf(stderr, "%s: out of memory\n", prog);
      return 2;
    }
    if (history != NULL && fclose(history) != 0) {
      fprintf(stderr, "%s: %s: %s\n", prog, history_path, strerror(errno));
      return 2;
    }
    print_result(seed, &r, summary);
    return r.ok ? 0 : 1;
  }
  uint64_t *seeds = NULL;
  size_t n = 0;
  if (regression != NULL) {
    FILE *f = fopen(regression, "r");
    if (f == NULL) {
      fprintf(stderr, "%s: %s: %s\n", prog, regression, strerror(errno));
      return 2;
    }
    char line[256];
    size_t cap = 0;
    while (fgets(line, sizeof line, f) != NULL) {
      char *p = line;
      while (*p == ' ' || *p == '\t') {
        p++;
      }
      if (*p < '0' || *p > '9') {
        continue; /* comments and blank lines */
      }
      if (n == cap) {
        cap = cap ? cap * 2 : 64;
        seeds = realloc(seeds, cap * sizeof *seeds);
      }
      seeds[n++] = strtoull(p, NULL, 10);
    }
    fclose(f);
  } else if (count > 0) {
    seeds = calloc(count, sizeof *seeds);
    for (uint64_t i = 0; i < count; i++) {
      seeds[i] = start + i;
    }
    n = count;
  } else {
    usage();
    return 2;
  }
  size_t failed =
      run_many(seeds, n, jobs, duration_ms, expect_fail, progress_s, self);
  free(seeds);
  if (expect_fail) {
    return failed > 0 ? 0 : 1;
  }
  return failed == 0 ? 0 : 1;
}
