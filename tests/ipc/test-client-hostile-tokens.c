/* libdsv32 against a daemon that lies about logprobs: a fake dsv32d (a child process that
 * speaks the handshake and the rings by hand) answers a GENERATE with a TOKENS record whose
 * logprob arrays do not match its tokens (fewer logprobs than tokens; alternatives that are
 * not a whole number per token; more than 20 per token). The library must refuse each
 * record (-EPROTO, its message naming the mismatch) instead of handing out arrays a client
 * would read past; a well-formed TOKENS with logprobs from the same fake is delivered with
 * the values it carried. */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/dsv32.h"
#include "ipc/proto.h"
#include "ipc/ring.h"
#include "tests/ipc/harness.h"
#include "tests/ipc/raw.h"

struct lie {
        uint32_t n_tokens, n_logprobs, n_top; /* n_top: entries in each of the two arrays */
        const char *want;                     /* in the library's message; NULL: a valid record */
};

static const struct lie lies[] = {
        {3, 2, 0, "2 logprobs for 3 tokens"},
        {3, 3, 5, "5 top_ids for 3 tokens"},
        {1, 1, 21, "21 top_ids for 1 tokens"},
        {2, 2, 4, NULL},
};

/* The fake daemon: accepts one connection per lie, answers its GENERATE with that TOKENS
 * record and a DONE. Exits 0 when every client came, 1 on anything unexpected. */
static int fake_daemon(int lfd) {
        static const int32_t ids[21] = {7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27};
        static const float lps[21] = {-0.5f, -1, -1.5f, -2, -2.5f, -3, -3.5f, -4, -4.5f, -5, -5.5f,
                                      -6, -6.5f, -7, -7.5f, -8, -8.5f, -9, -9.5f, -10, -10.5f};
        for (size_t k = 0; k < sizeof(lies) / sizeof(lies[0]); k++) {
                uint8_t buf[4096];
                struct dsv_shm shm;
                struct dsv_msg m = {.type = DSV_MSG_WELCOME};
                struct dsv_wbuf w;
                union {
                        struct cmsghdr a;
                        char b[CMSG_SPACE(sizeof(int))];
                } cm;
                struct iovec iov;
                struct msghdr mh = {0};
                struct cmsghdr *ch;
                uint64_t id = 0;
                int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC), memfd;

                if (fd < 0 || recv(fd, buf, sizeof(buf), 0) <= 0 || dsv_shm_create(1 << 16, 1 << 16, &memfd, &shm) < 0)
                        return 1;
                m.u.welcome.version_major = DSV_IPC_VERSION_MAJOR;
                m.u.welcome.version_minor = DSV_IPC_VERSION_MINOR;
                m.u.welcome.state = DSV_STATE_READY;
                m.u.welcome.vocab_size = 4096;
                m.u.welcome.bos_id = 0;
                m.u.welcome.eos_id = 1;
                m.u.welcome.max_context = 4096;
                m.u.welcome.features = DSV_FEATURE_LOGPROBS;
                m.u.welcome.shm_size = shm.size;
                m.u.welcome.max_tokens_limit = 256;
                m.u.welcome.max_prompt_bytes = 1 << 20;
                iov = (struct iovec){.iov_base = buf, .iov_len = h_raw_record(buf, DSV_MSG_WELCOME, 0, &m)};
                mh.msg_iov = &iov;
                mh.msg_iovlen = 1;
                mh.msg_control = cm.b;
                mh.msg_controllen = sizeof(cm.b);
                ch = CMSG_FIRSTHDR(&mh);
                ch->cmsg_level = SOL_SOCKET;
                ch->cmsg_type = SCM_RIGHTS;
                ch->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(ch), &memfd, sizeof(int));
                if (sendmsg(fd, &mh, MSG_NOSIGNAL) < 0)
                        return 1;
                close(memfd);
                /* the GENERATE (its id), then the TOKENS record and a DONE */
                for (int tries = 0; !id && tries < 20000; tries++) {
                        struct dsv_ipc_record r;
                        struct dsv_msg g;
                        if (dsv_ring_read(&shm.sub, &r, buf, sizeof(buf)) <= 0) {
                                usleep(500);
                                continue;
                        }
                        if (r.type == DSV_MSG_GENERATE && dsv_msg_decode(r.type, buf, r.length, &g, NULL, 0) == 0) {
                                id = g.u.generate.id;
                                dsv_msg_release(&g);
                        }
                }
                if (!id)
                        return 1;
                m = (struct dsv_msg){.type = DSV_MSG_TOKENS};
                m.u.tokens.id = id;
                m.u.tokens.tokens = ids;
                m.u.tokens.n_tokens = lies[k].n_tokens;
                m.u.tokens.logprobs = lps;
                m.u.tokens.n_logprobs = lies[k].n_logprobs;
                m.u.tokens.top_ids = ids;
                m.u.tokens.top_logprobs = lps;
                m.u.tokens.n_top = m.u.tokens.n_top_logprobs = lies[k].n_top;
                dsv_wbuf_fixed(&w, buf, sizeof(buf));
                if (dsv_msg_encode(&m, &w) < 0 || dsv_ring_write(&shm.comp, DSV_MSG_TOKENS, 0, buf, (uint32_t)w.len) < 0)
                        return 1;
                m = (struct dsv_msg){.type = DSV_MSG_DONE};
                m.u.done.id = id;
                m.u.done.reason = DSV_FINISH_LENGTH;
                dsv_wbuf_fixed(&w, buf, sizeof(buf));
                if (dsv_msg_encode(&m, &w) < 0 || dsv_ring_write(&shm.comp, DSV_MSG_DONE, 0, buf, (uint32_t)w.len) < 0)
                        return 1;
                dsv_ipc_doorbell(fd);
                /* until the client hangs up */
                while (recv(fd, buf, sizeof(buf), 0) > 0)
                        ;
                close(fd);
                dsv_shm_unmap(&shm);
        }
        return 0;
}

int main(void) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        static const int32_t prompt[] = {0, 5};
        int lfd, st;
        pid_t pid;

        h_init("client-hostile-tokens", 60);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/fake.sock", h_tmpdir());
        lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        REQUIRE(lfd >= 0 && bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(lfd, 4) == 0, "listen %s",
                sa.sun_path);
        pid = fork();
        REQUIRE(pid >= 0, "fork");
        if (pid == 0)
                _exit(fake_daemon(lfd));
        for (size_t k = 0; k < sizeof(lies) / sizeof(lies[0]); k++) {
                struct dsv32_connect_opts o = {.struct_size = sizeof(o), .socket_path = sa.sun_path};
                struct dsv32_request q = {.struct_size = sizeof(q), .tokens = prompt, .n_tokens = 2,
                                          .flags = DSV32_REQ_LOGPROBS, .top_logprobs = 2};
                struct dsv32_event ev[4];
                dsv32_client *c;
                uint64_t id;
                int n = 0, r;

                r = dsv32_connect(&o, &c);
                REQUIRE(r == 0, "connect to the fake daemon: %s", dsv32_last_error(NULL));
                REQUIRE(dsv32_submit(c, &q, &id) == 0, "submit: %s", dsv32_last_error(c));
                for (int tries = 0; tries < 100 && n == 0; tries++) {
                        dsv32_wait(c, 100);
                        n = dsv32_poll_events(c, ev, 4);
                }
                if (lies[k].want) {
                        CHECK(n == -EPROTO && strstr(dsv32_last_error(c), lies[k].want),
                              "a TOKENS with %s: poll gave %d, '%s'", lies[k].want, n, dsv32_last_error(c));
                } else {
                        CHECK(n >= 1 && ev[0].type == DSV32_EVENT_TOKENS && ev[0].n_tokens == 2 && ev[0].n_top == 2 &&
                                      ev[0].logprobs[1] == -1.0f && ev[0].top_tokens[3] == 10 && ev[0].top_logprobs[2] == -1.5f,
                              "a valid TOKENS with logprobs: %d events, %s", n, dsv32_last_error(c));
                }
                dsv32_disconnect(c);
        }
        REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid");
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the fake daemon failed (status 0x%x)", st);
        close(lfd);
        fprintf(stderr, "libdsv32 refuses %zu TOKENS records whose logprob arrays do not fit their tokens\n",
                sizeof(lies) / sizeof(lies[0]) - 1);
        return test_failures ? 1 : 0;
}
