/* comm-conformance: runs the communicator conformance suite (tests/comm/conformance.c) on
 * one implementation of kernels/comm.h:
 *
 *   comm-conformance --impl local [--ranks 1,2,3,4,8]   threads of this process
 *   mpirun -np N comm-conformance --impl mpi            one rank per process (Open MPI)
 *   comm-conformance --impl mpi --join FILE --nodes N --node-rank R
 *                                                       N processes started on their own,
 *                                                       joined through an ompi-server
 *                                                       (OMPI_MCA_pmix_server_uri): node 0
 *                                                       writes its port names into FILE, the
 *                                                       others read it (dsv_comm_mpi_join)
 *   comm-conformance --impl nccl [--ranks N]            one rank per GPU (threads), through
 *                                                       the CUDA plugin (default: every GPU)
 *
 * Options: --timeout-ms T (the short timeout of the timeout test, default 300), --large N
 * (elements of the large case, default 262147), --slack-ms S (how late a timeout or an
 * abort may be reported, default 3000). Exit status: 0 pass, 1 fail, 77 skip (no MPI in
 * this build, no GPU), 2 usage. */
#include "config.h"

#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/util.h"
#include "kernels/backend.h"
#include "kernels/backend_plugin.h"
#include "kernels/comm.h"
#include "tests/comm/conformance.h"

#define LONG_TIMEOUT_MS 60000 /* the healthy communicators: only a hang reaches it */

struct opts {
        const char *impl;
        int ranks[16];
        int n_ranks;
        int timeout_ms;
        size_t large;
        int slack_ms;
        const char *join; /* mpi: the port file of a joined group */
        int nodes, node_rank;
};

static void usage(FILE *f) {
        fprintf(f, "Usage: comm-conformance --impl local|mpi|nccl [--ranks LIST] [--timeout-ms T] [--large N] [--slack-ms S]\n"
                   "       [--join FILE --nodes N --node-rank R] (mpi: processes started on their own)\n"
                   "Runs the communicator conformance suite on one implementation (see the source's header).\n");
}

static int parse_ranks(const char *s, struct opts *o) {
        _cleanup_free_ char *copy = strdup(s);
        char *save = NULL;
        long v;
        o->n_ranks = 0;
        if (!copy)
                return -ENOMEM;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (o->n_ranks == (int)ARRAY_SIZE(o->ranks) || dsv_parse_int(t, 1, 64, &v) < 0)
                        return -EINVAL;
                o->ranks[o->n_ranks++] = (int)v;
        }
        return o->n_ranks ? 0 : -EINVAL;
}

/* ------------------------------------------------------------------ threads (local, nccl) */
struct nccl_ids {
        unsigned char id[CONF_COMM_MAX][512];
        size_t len[CONF_COMM_MAX];
        int size;
        int timeout_ms;
};

struct thread_arg {
        struct conf_rank R;
        const struct nccl_ids *ids; /* nccl: the rank joins its groups in its thread */
        int rank;
};

/* NCCL's init is collective: every rank's thread joins at once. */
static int join_nccl(struct thread_arg *a) {
        for (int g = 0; g < CONF_COMM_MAX; g++) {
                struct dsv_error err = {{0}};
                if (g == CONF_MISMATCH_A || g == CONF_MISMATCH_B || (g == CONF_TIMEOUT && a->ids->size == 1))
                        continue;
                int r = dsv_comm_open_plugin(a->R.be, a->ids->id[g], a->ids->len[g], a->ids->size, a->rank,
                                             g == CONF_TIMEOUT ? a->ids->timeout_ms : LONG_TIMEOUT_MS, &a->R.comm[g], &err);
                if (r < 0) {
                        fprintf(stderr, "[%s] cannot join NCCL group %d: %s\n", a->R.tag, g, err.msg);
                        a->R.failures++;
                        return r;
                }
        }
        return 0;
}

static void *rank_main(void *p) {
        struct thread_arg *a = p;
        if (a->ids && join_nccl(a) < 0)
                return NULL;
        conf_run(&a->R);
        return NULL;
}

/* Runs conf_run on n threads; args[r].R filled but for the tag; returns failures, checks. */
static int run_threads(struct thread_arg *args, int n, int *checks) {
        pthread_t *th = calloc((size_t)n, sizeof(*th));
        int failures = 0;
        if (!th)
                return 1;
        for (int r = 0; r < n; r++)
                if (pthread_create(&th[r], NULL, rank_main, &args[r]) != 0) {
                        fprintf(stderr, "cannot start rank thread %d\n", r);
                        exit(1);
                }
        for (int r = 0; r < n; r++) {
                pthread_join(th[r], NULL);
                failures += args[r].R.failures;
                *checks += args[r].R.checks;
        }
        if (*checks == 0)
                failures++; /* nothing ran: not a pass */
        free(th);
        return failures;
}

static int run_local(const struct opts *o) {
        const struct conf_traits tr = {
                .impl = "local", .rank_order = true, .group_abort = true, .detects_mismatch = true,
                .large = o->large, .slack_ms = o->slack_ms};
        int total_failures = 0;

        for (int k = 0; k < o->n_ranks; k++) {
                const int n = o->ranks[k];
                struct dsv_comm *groups[CONF_COMM_MAX][64] = {{0}};
                struct thread_arg args[64];
                int checks = 0, failures, r;
                uint64_t t0 = dsv_now_ns();

                memset(args, 0, sizeof(args));
                for (int g = 0; g < CONF_COMM_MAX; g++) {
                        r = dsv_comm_local_group_new(n, g == CONF_TIMEOUT ? o->timeout_ms : LONG_TIMEOUT_MS, groups[g]);
                        if (r < 0) {
                                fprintf(stderr, "dsv_comm_local_group_new(%d): %s\n", n, strerror(-r));
                                return 1;
                        }
                }
                for (int i = 0; i < n; i++) {
                        args[i].R.tr = &tr;
                        for (int g = 0; g < CONF_COMM_MAX; g++)
                                args[i].R.comm[g] = groups[g][i];
                        snprintf(args[i].R.tag, sizeof(args[i].R.tag), "local %dx rank %d", n, i);
                        if ((r = dsv_backend_cpu_new(1, &args[i].R.be)) < 0) {
                                fprintf(stderr, "cannot create a CPU backend: %s\n", strerror(-r));
                                return 1;
                        }
                }
                failures = run_threads(args, n, &checks);
                for (int i = 0; i < n; i++) {
                        for (int g = 0; g < CONF_COMM_MAX; g++)
                                dsv_comm_free(groups[g][i]);
                        dsv_backend_free(args[i].R.be);
                }
                printf("local, %d rank(s): %d checks, %d failed (%.2f s)\n", n, checks, failures,
                       (double)(dsv_now_ns() - t0) / 1e9);
                total_failures += failures;
        }
        return total_failures ? 1 : 0;
}

/* ------------------------------------------------------------------ mpi */
#ifdef HAVE_MPI
/* Processes started on their own: node 0 opens a port and publishes it in the file (a
 * rename, so a reader never sees half of it); the others wait for the file (60 s). */
static int join_group(const struct opts *o, struct dsv_comm **ret) {
        char port[8192] = "";
        int r;
        if (o->node_rank == 0) {
                _cleanup_free_ char *tmp = NULL;
                FILE *f;
                if ((r = dsv_comm_mpi_open_ports(o->nodes, port, sizeof(port))) < 0) {
                        fprintf(stderr, "node 0: cannot open an MPI port (is OMPI_MCA_pmix_server_uri set?): %s\n",
                                strerror(-r));
                        return r;
                }
                if (asprintf(&tmp, "%s.tmp", o->join) < 0 || !(f = fopen(tmp, "we")))
                        return -EIO;
                fputs(port, f);
                if (fclose(f) != 0 || rename(tmp, o->join) < 0)
                        return -EIO;
        } else {
                for (int i = 0; i < 6000 && !port[0]; i++) {
                        FILE *f = fopen(o->join, "re");
                        if (f) {
                                size_t n = fread(port, 1, sizeof(port) - 1, f);
                                port[n] = 0;
                                fclose(f);
                        } else {
                                struct timespec ts = {0, 10000000};
                                nanosleep(&ts, NULL);
                        }
                }
                if (!port[0]) {
                        fprintf(stderr, "node %d: no port name in %s after 60 s\n", o->node_rank, o->join);
                        return -ETIMEDOUT;
                }
        }
        if ((r = dsv_comm_mpi_join(port, o->nodes, o->node_rank, LONG_TIMEOUT_MS, ret)) < 0)
                fprintf(stderr, "node %d: cannot join the group of %d: %s\n", o->node_rank, o->nodes, strerror(-r));
        return r;
}
#endif

static int run_mpi(const struct opts *o) {
#ifdef HAVE_MPI
        const struct conf_traits tr = {.impl = "mpi", .rank_order = true, .large = o->large, .slack_ms = o->slack_ms};
        struct conf_rank R = {.tr = &tr};
        int r, ret = 1;
        uint64_t t0 = dsv_now_ns();

        struct dsv_comm *base = NULL;
        if (o->join && (r = join_group(o, &base)) < 0)
                goto out;
        for (int g = 0; g < CONF_COMM_MAX; g++) {
                if (g == CONF_MISMATCH_A || g == CONF_MISMATCH_B)
                        continue; /* MPI does not detect disagreeing ranks (undefined behaviour) */
                const int t = g == CONF_TIMEOUT ? o->timeout_ms : LONG_TIMEOUT_MS;
                r = base ? dsv_comm_mpi_dup(base, t, &R.comm[g]) : dsv_comm_mpi_new(t, &R.comm[g]);
                if (r < 0) {
                        fprintf(stderr, "dsv_comm_mpi_%s: %s\n", base ? "dup" : "new", strerror(-r));
                        dsv_comm_free(base);
                        goto out;
                }
        }
        dsv_comm_free(base);
        snprintf(R.tag, sizeof(R.tag), "mpi %dx rank %d", R.comm[CONF_MAIN]->size, R.comm[CONF_MAIN]->rank);
        if ((r = dsv_backend_cpu_new(1, &R.be)) < 0) {
                fprintf(stderr, "cannot create a CPU backend: %s\n", strerror(-r));
                goto out;
        }
        conf_run(&R);
        {
                /* the group's verdict, so that rank 0 can print one line */
                int32_t f[2] = {R.failures, R.checks};
                r = dsv_comm_all_reduce(R.comm[CONF_MAIN], f, f, 2, DSV_I32, DSV_REDUCE_SUM);
                if (r < 0)
                        fprintf(stderr, "[%s] cannot add up the results: %s\n", R.tag, dsv_comm_last_error(R.comm[CONF_MAIN]));
                else if (R.comm[CONF_MAIN]->rank == 0)
                        printf("mpi, %d rank(s): %d checks, %d failed (%.2f s)\n", R.comm[CONF_MAIN]->size, f[1], f[0],
                               (double)(dsv_now_ns() - t0) / 1e9);
                ret = r < 0 || R.failures ? 1 : 0;
        }
out:
        for (int g = 0; g < CONF_COMM_MAX; g++)
                dsv_comm_free(R.comm[g]);
        dsv_backend_free(R.be);
        dsv_comm_mpi_finalize();
        return ret;
#else
        (void)o;
        fprintf(stderr, "comm-conformance: SKIP: this build has no Open MPI (Debian: apt-get install libopenmpi-dev "
                        "openmpi-bin, then ./configure)\n");
        return 77;
#endif
}

/* ------------------------------------------------------------------ nccl */

/* The CUDA backend on one GPU: the one place this file opens a backend by name. */
static int cuda_backend(int device, struct dsv_backend **ret, struct dsv_error *err) {
        return dsv_backend_open("cuda", &(struct dsv_backend_opts){.device = device}, ret, err);
}

static int run_nccl(const struct opts *o) {
        const struct conf_traits tr = {.impl = "nccl", .large = o->large, .slack_ms = o->slack_ms};
        struct dsv_backend *probe = NULL;
        struct dsv_error err = {{0}};
        static struct nccl_ids ids;
        struct thread_arg args[16];
        int n, r, checks = 0, failures;
        const char *req = getenv("DSV32_REQUIRE_GPU");
        const int skip = req && *req == '1' ? 1 : 77;

        r = cuda_backend(0, &probe, &err);
        if (r < 0) {
                fprintf(stderr, "comm-conformance: %s: %s\n", skip == 77 ? "SKIP" : "FAIL", err.msg);
                return r == -ENODEV || r == -ENOENT ? skip : 1;
        }
        if (dsv_backend_is_emulated(probe)) { /* ./configure --with-cuda=emulate: a CPU emulation, no NCCL */
                fprintf(stderr, "comm-conformance: %s: the CUDA plugin is the CPU emulation (%s), which has no NCCL\n",
                        skip == 77 ? "SKIP" : "FAIL", dsv_backend_describe(probe));
                dsv_backend_free(probe);
                return skip;
        }
        n = o->n_ranks ? o->ranks[0] : 1;
        if (!o->n_ranks) {
                /* every GPU: open devices until one is missing */
                struct dsv_backend *b = NULL;
                while (n < 16 && cuda_backend(n, &b, &err) == 0) {
                        dsv_backend_free(b);
                        n++;
                }
        }
        if (n > 16) {
                fprintf(stderr, "comm-conformance: at most 16 NCCL ranks\n");
                return 2;
        }
        ids.size = n;
        ids.timeout_ms = o->timeout_ms;
        for (int g = 0; g < CONF_COMM_MAX; g++) {
                r = dsv_comm_plugin_unique_id(probe, ids.id[g], sizeof(ids.id[g]), &ids.len[g]);
                if (r < 0) {
                        fprintf(stderr, "comm-conformance: FAIL: no NCCL unique id: %s (%s)\n", strerror(-r),
                                dsv_backend_last_error(probe));
                        dsv_backend_free(probe);
                        return 1;
                }
        }
        dsv_backend_free(probe);

        memset(args, 0, sizeof(args));
        for (int i = 0; i < n; i++) {
                args[i].R.tr = &tr;
                args[i].ids = &ids;
                args[i].rank = i;
                snprintf(args[i].R.tag, sizeof(args[i].R.tag), "nccl %dx rank %d", n, i);
                if ((r = cuda_backend(i, &args[i].R.be, &err)) < 0) {
                        fprintf(stderr, "comm-conformance: FAIL: %s\n", err.msg);
                        return 1;
                }
        }
        failures = run_threads(args, n, &checks);
        for (int i = 0; i < n; i++) {
                for (int g = 0; g < CONF_COMM_MAX; g++)
                        dsv_comm_free(args[i].R.comm[g]);
                dsv_backend_free(args[i].R.be);
        }
        printf("nccl, %d rank(s): %d checks, %d failed%s\n", n, checks, failures,
               n == 1 ? " (one GPU: no timeout test, no peers)" : "");
        return failures ? 1 : 0;
}

int main(int argc, char **argv) {
        static const struct option lo[] = {
                {"impl", required_argument, NULL, 'i'},       {"ranks", required_argument, NULL, 'r'},
                {"timeout-ms", required_argument, NULL, 't'}, {"large", required_argument, NULL, 'l'},
                {"slack-ms", required_argument, NULL, 's'},   {"help", no_argument, NULL, 'h'},
                {"join", required_argument, NULL, 'j'},       {"nodes", required_argument, NULL, 'n'},
                {"node-rank", required_argument, NULL, 'R'},
                {0},
        };
        struct opts o = {.timeout_ms = 300, .large = 262147, .slack_ms = 3000};
        long v;
        int c;

        while ((c = getopt_long(argc, argv, "h", lo, NULL)) >= 0) {
                switch (c) {
                case 'i':
                        o.impl = optarg;
                        break;
                case 'r':
                        if (parse_ranks(optarg, &o) < 0) {
                                fprintf(stderr, "comm-conformance: --ranks takes a list of 1..64, not '%s'\n", optarg);
                                return 2;
                        }
                        break;
                case 't':
                        if (dsv_parse_int(optarg, 10, 600000, &v) < 0)
                                return usage(stderr), 2;
                        o.timeout_ms = (int)v;
                        break;
                case 'l':
                        if (dsv_parse_int(optarg, 0, 1 << 26, &v) < 0)
                                return usage(stderr), 2;
                        o.large = (size_t)v;
                        break;
                case 's':
                        if (dsv_parse_int(optarg, 10, 600000, &v) < 0)
                                return usage(stderr), 2;
                        o.slack_ms = (int)v;
                        break;
                case 'j':
                        o.join = optarg;
                        break;
                case 'n':
                        if (dsv_parse_int(optarg, 1, 64, &v) < 0)
                                return usage(stderr), 2;
                        o.nodes = (int)v;
                        break;
                case 'R':
                        if (dsv_parse_int(optarg, 0, 63, &v) < 0)
                                return usage(stderr), 2;
                        o.node_rank = (int)v;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (!o.impl || optind != argc || (o.join && (o.nodes < 1 || o.node_rank >= o.nodes))) {
                usage(stderr);
                return 2;
        }
        if (strcmp(o.impl, "local") == 0) {
                if (!o.n_ranks)
                        parse_ranks("1,2,3,4,8", &o);
                return run_local(&o);
        }
        if (strcmp(o.impl, "mpi") == 0)
                return run_mpi(&o);
        if (strcmp(o.impl, "nccl") == 0)
                return run_nccl(&o);
        usage(stderr);
        return 2;
}
