/* The communicator conformance suite (tests/comm/conformance.c): what one rank runs, the
 * same for every implementation of kernels/comm.h. The runners (tests/comm/comm-conformance.c)
 * create the communicators (threads for local, processes for mpi, GPUs for nccl) and call
 * conf_run on every rank.
 *
 * Buffers live in the rank's backend memory (the CPU backend for host communicators, the
 * CUDA backend for NCCL) and go through upload/download, so one suite serves all three.
 * Inputs are known patterns (each element a function of rank and index) and expected
 * outputs are computed independently on the host, so a misrouted or misreduced element is
 * an exact failure with its index. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "kernels/backend.h"
#include "kernels/comm.h"

/* What an implementation promises beyond the common semantics. */
struct conf_traits {
        const char *impl;
        bool rank_order;       /* sums equal the host's rank-order reduction bit for bit */
        bool group_abort;      /* aborting one rank's handle breaks every rank's handle */
        bool detects_mismatch; /* disagreeing ranks get -EPROTO instead of undefined behaviour */
        size_t large;          /* the large count tested (elements per rank) */
        int slack_ms;          /* how late a timeout or abort may be reported (loaded machines) */
};

enum conf_comm {
        CONF_MAIN,       /* healthy all along; long timeout */
        CONF_TIMEOUT,    /* the last rank shows up late: timeout_ms short */
        CONF_ABORT,      /* rank 0 aborts while waiting; long timeout */
        CONF_MISMATCH_A, /* the ranks call different collectives (detects_mismatch only) */
        CONF_MISMATCH_B, /* a send with no matching receive count (detects_mismatch only) */
        CONF_COMM_MAX,
};

struct conf_rank {
        struct dsv_comm *comm[CONF_COMM_MAX]; /* NULL: that part is skipped */
        struct dsv_backend *be;
        const struct conf_traits *tr;
        int failures, checks;
        char tag[48]; /* "local 4x rank 2" */
};

/* Runs every test this rank's communicators allow; returns the number of failures. */
int conf_run(struct conf_rank *R);
