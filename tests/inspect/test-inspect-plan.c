/* dsv32-inspect --plan: the multi-GPU plan (daemon/plan.c) of the published 671B config,
 * against sums computed here from the tensor table, tensor by tensor:
 *   - 8xH200 ep,dp: 32 experts a rank, the dense and vocabulary tensors exactly an eighth,
 *     MLA and indexer whole; the KV pool is what is left of 92% - 6 GiB in whole pages;
 *     sequences at a context; 8xH100 does not fit, by the difference;
 *   - 2x8xH200: 16 experts a rank, tensor parallelism stays within a node;
 *   - ep,tp: q_b_proj, kv_b_proj, o_proj an eighth, every GPU of the node holds the cache;
 *   - the routing model: with 8 groups of 32 experts and top-4 groups, a rank owning one
 *     group receives a token with probability 1/2 (1 - C(96,8)/C(128,8)), the decode-step
 *     bytes follow from it; times are bytes over bandwidth;
 *   - bad plans: exit 2 with a message (usage), exit 1 when the layout cannot split the
 *     model; every JSON field of the plan is documented in --help and dsv32-inspect(1). */
#include "tests/inspect/inspect-test.h"

#include "daemon/inspect.h"
#include "daemon/plan.h"
#include "daemon/weights_spec.h"

static const char *tool_path, *out_path, *err_path;

static int tool(char **out, char **err, char *const *args) {
        char *argv[20] = {(char *)tool_path};
        int n = 1;
        while (args[n - 1] && n < 19) {
                argv[n] = args[n - 1];
                n++;
        }
        argv[n] = NULL;
        int st = run_capture(argv, out_path, err_path);
        *out = slurp(out_path);
        *err = slurp(err_path);
        return st;
}

static json_t *plan_json(char *const *args) {
        _cleanup_free_ char *out = NULL, *err = NULL;
        int st = tool(&out, &err, args);
        CHECK(st == 0, "dsv32-inspect %s %s %s: exit %d: %s", args[0], args[1], args[2], st, err);
        json_t *j = json_loads(out, 0, NULL);
        CHECK(j != NULL, "the output is JSON");
        return j;
}

static void expect_exit(int want, const char *msg, char *const *args) {
        _cleanup_free_ char *out = NULL, *err = NULL;
        int st = tool(&out, &err, args);
        CHECK(st == want, "dsv32-inspect %s %s %s %s: exit %d, expected %d (%s)", args[0], args[1], args[2] ? args[2] : "",
              args[2] && args[3] ? args[3] : "", st, want, err);
        CHECK(strstr(err, msg) != NULL, "stderr says \"%s\": %s", msg, err);
        CHECK(out[0] == 0, "nothing on stdout: %s", out);
}

static void keys_documented(json_t *v, const char *help, const char *man) {
        const char *key;
        json_t *x;
        size_t i;
        if (json_is_array(v)) {
                json_array_foreach(v, i, x) keys_documented(x, help, man);
                return;
        }
        if (!json_is_object(v))
                return;
        json_object_foreach(v, key, x) {
                CHECK(strstr(help, key) != NULL, "JSON field \"%s\" is not in --help", key);
                CHECK(strstr(man, key) != NULL, "JSON field \"%s\" is not in dsv32-inspect.1", key);
                keys_documented(x, help, man);
        }
}

/* Bytes of the tensors of the given components, each split `ways` along a dimension chosen
 * by name (here, unlike plan.c, by looking at each name in full). */
struct sums {
        uint64_t attention_whole, attention_tp8, dense8, vocab8, other, embed8, routed;
};

static void sum_tensors(const struct dsv_model_config *cfg, struct sums *s) {
        struct dsv_tensor_spec *specs = NULL;
        size_t n = 0;
        memset(s, 0, sizeof(*s));
        REQUIRE(dsv_weight_specs(cfg, false, &specs, &n) == 0, "dsv_weight_specs");
        for (size_t i = 0; i < n; i++) {
                struct dsv_tensor_spec t = specs[i];
                const uint64_t whole = dsv_inspect_spec_bytes(cfg, &t, NULL);
                switch (t.comp) {
                case DSV_COMP_ROUTED:
                        s->routed += whole;
                        break;
                case DSV_COMP_ATTN:
                case DSV_COMP_INDEXER:
                        s->attention_whole += whole;
                        if (strstr(t.name, "self_attn.q_b_proj.") || strstr(t.name, "self_attn.kv_b_proj."))
                                t.shape[0] /= 8;
                        else if (strstr(t.name, "self_attn.o_proj."))
                                t.shape[1] /= 8;
                        s->attention_tp8 += dsv_inspect_spec_bytes(cfg, &t, NULL);
                        break;
                case DSV_COMP_DENSE_MLP:
                case DSV_COMP_SHARED:
                        /* all the 671B intermediate sizes divide into 8 whole 128 blocks */
                        CHECK(whole % 8 == 0, "%s: %llu bytes do not split in 8", t.name, (unsigned long long)whole);
                        s->dense8 += whole / 8;
                        break;
                case DSV_COMP_EMBED:
                case DSV_COMP_HEAD:
                        CHECK(whole % 8 == 0, "%s: %llu bytes do not split in 8", t.name, (unsigned long long)whole);
                        s->vocab8 += whole / 8;
                        if (t.comp == DSV_COMP_EMBED)
                                s->embed8 += whole / 8;
                        break;
                default:
                        s->other += whole;
                        break;
                }
        }
        free(specs);
}

int main(void) {
        _cleanup_free_ char *tp = NULL, *op = NULL, *ep = NULL, *help = NULL, *herr = NULL, *man = NULL, *manp = NULL,
                            *scratch = test_scratch("plan");
        struct dsv_model_config cfg;
        struct dsv_param_counts pc;
        struct dsv_kv_costs kv;
        struct sums s;
        json_t *j;

        /* the tool's output goes to a scratch directory, removed at the end (distcheck) */
        if (!scratch || asprintf(&tp, "%s/dsv32-inspect", test_builddir()) < 0 || asprintf(&op, "%s/out", scratch) < 0 ||
            asprintf(&ep, "%s/err", scratch) < 0 ||
            asprintf(&manp, "%s/man/dsv32-inspect.1", test_srcdir()) < 0)
                return 1;
        tool_path = tp, out_path = op, err_path = ep;
        dsv_model_config_v32(&cfg);
        REQUIRE(dsv_inspect_params(&cfg, &pc) == 0 && dsv_inspect_kv_costs(&cfg, DSV_INSPECT_KV_FP8, &kv) == 0, "accounting");
        sum_tensors(&cfg, &s);
        const uint64_t one_expert = s.routed / (uint64_t)(pc.moe_layers * cfg.n_routed_experts);
        CHECK_U64(one_expert, pc.bytes_routed_expert);

        /* ---------------------------------------------------------------- 8xH200, ep,dp */
        {
                char *args[] = {"--preset", "v32", "--json", "--plan", "8xH200", "--batch", "64", "--context", "4K", "--context", "128K", NULL};
                j = plan_json(args);
        }
        const uint64_t h200 = 143771ull << 20;
        CHECK_JSON_U64(j, "plan.ranks", 8);
        CHECK_JSON_U64(j, "plan.experts_per_rank", 32);
        CHECK_JSON_U64(j, "plan.spec.mem_bytes", h200);
        CHECK_JSON_U64(j, "plan.weights.routed_experts", s.routed / 8);
        CHECK_JSON_U64(j, "plan.weights.attention", s.attention_whole);
        CHECK_JSON_U64(j, "plan.weights.dense_and_shared", s.dense8);
        CHECK_JSON_U64(j, "plan.weights.vocab", s.vocab8);
        CHECK_JSON_U64(j, "plan.weights.other", s.other);
        const uint64_t w8 = s.routed / 8 + s.attention_whole + s.dense8 + s.vocab8 + s.other;
        CHECK_JSON_U64(j, "plan.weights.total", w8);
        /* everything but the routed experts, every rank: the split parts add up to the model */
        CHECK_U64(s.routed + s.attention_whole + s.dense8 * 8 + s.vocab8 * 8 + s.other, pc.bytes);
        const double budget = (double)h200 * 0.92 - (double)(6ull << 30);
        const uint64_t pages = (uint64_t)((budget - (double)w8) / (double)kv.page_bytes);
        CHECK_JSON_U64(j, "plan.budget_bytes", (uint64_t)budget);
        CHECK(json_is_true(jget(j, "plan.fits")), "8xH200 fits");
        CHECK_JSON_U64(j, "plan.kv_pages", pages);
        CHECK_JSON_U64(j, "plan.kv_pool_bytes", pages * kv.page_bytes);
        CHECK_JSON_U64(j, "plan.kv_tokens_per_rank", pages * 64);
        CHECK_JSON_U64(j, "plan.kv_copies", 1);
        CHECK_JSON_U64(j, "plan.kv_tokens_total", pages * 64 * 8);
        CHECK_JSON_U64(j, "plan.max_batch[0].sequences", pages / 64 * 8);
        CHECK_JSON_U64(j, "plan.max_batch[1].sequences", pages / 2048 * 8);
        fprintf(stderr, "8xH200 ep,dp: %.2f GiB weights a rank, %llu KV tokens a rank, %llu sequences of 128K\n",
                (double)w8 / (1 << 30), (unsigned long long)(pages * 64), (unsigned long long)(pages / 2048 * 8));
        {
                /* one group of 32 experts a rank: the group kept (1/2), then one of 8 of 128 */
                double none = 1.0;
                for (int i = 0; i < 8; i++)
                        none *= (96.0 - i) / (128.0 - i);
                const double p = 0.5 * (1.0 - none), b = 8;
                const double per = 7168 + 4 * 56 + 8 * 8 + 2 * 7168;
                CHECK_NEAR(jnumber(j, "plan.decode_step[0].ranks_per_token"), 8 * p, 1e-12);
                CHECK_NEAR(jnumber(j, "plan.decode_step[0].nvlink_ranks_per_token"), 7 * p, 1e-12);
                CHECK(jnumber(j, "plan.decode_step[0].net_ranks_per_token") == 0, "one node: no network");
                CHECK_JSON_U64(j, "plan.decode_step[0].batch_per_rank", 8);
                CHECK_NEAR(jnumber(j, "plan.decode_step[0].a2a_nvlink_bytes"), b * 7 * p * per * 58, 1e-7); /* rounded to bytes */
                CHECK_NEAR(jnumber(j, "plan.decode_step[0].tp_nvlink_bytes"), (3 + 58 + 2) * 2.0 * 7 * b * 7168 * 2, 1e-12);
                const double touched = 32 * (1 - pow(1 - 8.0 / 256, 64));
                CHECK_NEAR(jnumber(j, "plan.decode_step[0].experts_touched"), touched, 1e-12);
                const double wread = (double)(w8 - s.routed / 8 - s.embed8) + b * (double)pc.bytes_embed / 129280 +
                                     touched * 58 * (double)one_expert;
                CHECK_NEAR(jnumber(j, "plan.decode_step[0].hbm_weight_bytes"), wread, 1e-9);
                const double kvread = b * 61 * (2048.0 * 656 + 4096.0 * 132);
                CHECK_NEAR(jnumber(j, "plan.decode_step[0].hbm_kv_bytes"), kvread, 1e-12);
                CHECK_NEAR(jnumber(j, "plan.decode_step[0].t_hbm_s"), (wread + kvread) / 4.8e12, 1e-6);
                const double t = jnumber(j, "plan.decode_step[0].t_hbm_s") + jnumber(j, "plan.decode_step[0].t_nvlink_s") +
                                 jnumber(j, "plan.decode_step[0].t_net_s");
                CHECK_NEAR(jnumber(j, "plan.decode_step[0].tokens_per_s_serial"), 64 / t, 1e-9);
        }
        {
                char *args[] = {"--help", NULL};
                CHECK(tool(&help, &herr, args) == 0, "--help");
                CHECK(dsv_read_file(manp, 1 << 20, &man, NULL) == 0, "cannot read %s", manp);
                keys_documented(jget(j, "plan"), help, man ? man : "");
        }
        json_decref(j);

        /* ---------------------------------------------------------------- 8xH100: does not fit */
        {
                char *args[] = {"--preset", "v32", "--json", "--plan", "8xh100", NULL};
                j = plan_json(args);
                CHECK(json_is_false(jget(j, "plan.fits")), "8xH100 does not fit");
                CHECK_JSON_U64(j, "plan.kv_pages", 0);
                const double b100 = (double)(81559ull << 20) * 0.92 - (double)(6ull << 30);
                CHECK_NEAR(jnumber(j, "plan.kv_pool_bytes"), floor(b100 - (double)w8), 1e-12);
                json_decref(j);
        }

        /* ---------------------------------------------------------------- 2x8xH200 */
        {
                char *args[] = {"--preset", "v32", "--json", "--plan", "2x8xH200", "--batch", "256", NULL};
                j = plan_json(args);
                CHECK_JSON_U64(j, "plan.ranks", 16);
                CHECK_JSON_U64(j, "plan.experts_per_rank", 16);
                CHECK_JSON_U64(j, "plan.weights.routed_experts", s.routed / 16);
                CHECK_JSON_U64(j, "plan.weights.dense_and_shared", s.dense8); /* tensor-parallel within a node */
                double none = 1.0;
                for (int i = 0; i < 8; i++)
                        none *= (112.0 - i) / (128.0 - i);
                const double p = 0.5 * (1.0 - none);
                CHECK_NEAR(jnumber(j, "plan.decode_step[0].nvlink_ranks_per_token"), 7 * p, 1e-12);
                CHECK_NEAR(jnumber(j, "plan.decode_step[0].net_ranks_per_token"), 8 * p, 1e-12);
                CHECK(jnumber(j, "plan.decode_step[0].t_net_s") > 0, "two nodes: network time");
                json_decref(j);
        }

        /* ---------------------------------------------------------------- ep,tp */
        {
                char *args[] = {"--preset", "v32", "--json", "--plan", "8xH200", "--parallel", "ep,tp", NULL};
                j = plan_json(args);
                CHECK_JSON_U64(j, "plan.weights.attention", s.attention_tp8);
                CHECK(s.attention_tp8 < s.attention_whole / 3, "heads split: %llu of %llu", (unsigned long long)s.attention_tp8,
                      (unsigned long long)s.attention_whole);
                CHECK_JSON_U64(j, "plan.kv_copies", 8);
                CHECK_NEAR(jnumber(j, "plan.kv_tokens_total"), jnumber(j, "plan.kv_tokens_per_rank"), 0);
                CHECK(json_is_null(jget(j, "plan.decode_step")), "no step model for ep,tp");
                json_decref(j);
        }

        /* ---------------------------------------------------------------- bad plans */
        {
                char *a1[] = {"--preset", "v32", "--plan", "16xH200", NULL};
                expect_exit(2, "at most 8", a1);
                char *a2[] = {"--preset", "v32", "--plan", "8xA100", NULL};
                expect_exit(2, "unknown GPU 'A100'", a2);
                char *a3[] = {"--preset", "v32", "--plan", "8", NULL};
                expect_exit(2, "GPUSxTYPE", a3);
                char *a4[] = {"--preset", "v32", "--plan", "1x2x3xH200", NULL};
                expect_exit(2, "GPUSxTYPE", a4);
                char *a5[] = {"--preset", "v32", "--plan", "8xH200", "--parallel", "tp,tp", NULL};
                expect_exit(2, "ep,dp or ep,tp", a5);
                char *a6[] = {"--preset", "v32", "--plan", "8xH200", "--mem-fraction", "1.5", NULL};
                expect_exit(2, "--mem-fraction", a6);
                char *a7[] = {"--preset", "v32", "--parallel", "ep,dp", NULL};
                expect_exit(2, "go with --plan", a7);
                char *a8[] = {"--preset", "tiny", "--plan", "4x8xH200", NULL};
                expect_exit(1, "16 experts cannot be spread over 32 ranks", a8);
                char *a9[] = {"--preset", "tiny", "--plan", "8xH200", "--parallel", "ep,tp", NULL};
                expect_exit(1, "4 attention heads do not split over 8 GPUs", a9);
        }
        {
                /* the table names the parts and the pool */
                _cleanup_free_ char *out = NULL, *err = NULL;
                char *args[] = {"--preset", "v32", "--plan", "2x8xH200", NULL};
                CHECK(tool(&out, &err, args) == 0, "table: %s", err);
                CHECK(strstr(out, "Plan        16 x H200 (2 nodes x 8 GPUs), layout ep,dp: 16 ranks") && strstr(out, "KV pool per rank") &&
                              strstr(out, "16 of 256 experts"),
                      "the table: %s", out);
        }
        rm_rf(scratch);
        return test_result("test-inspect-plan");
}
