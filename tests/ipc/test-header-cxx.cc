// dsv32.h compiles as C++ (no C-only constructs, extern "C" linkage) and links; its
// function-like macros (the sized entry points) work from C++; the version macros agree
// with the library it links.
#include <dsv32.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

int main() {
        dsv32_request q{};
        q.struct_size = sizeof(q);
        dsv32_connect_opts o{};
        o.struct_size = sizeof(o);
        o.socket_path = "/nonexistent/dsv32d.sock";
        dsv32_client *c = nullptr;
        int r = dsv32_connect(&o, &c);
        if (r >= 0 || c != nullptr || std::strlen(dsv32_version()) == 0 || std::strstr(dsv32_last_error(nullptr), "/nonexistent") == nullptr) {
                std::fprintf(stderr, "unexpected: connect %d, last error '%s'\n", r, dsv32_last_error(nullptr));
                return 1;
        }
        dsv32_stats st{};
        dsv32_event ev[2]{};
        dsv32_session_entry se[1]{};
        if (dsv32_stats(c, &st) != -EINVAL || dsv32_poll_events(c, ev, 2) != -EINVAL ||
            dsv32_generate(c, &q, nullptr, nullptr, nullptr) != -EINVAL || dsv32_session_list(c, se, 1, nullptr) != -EINVAL) {
                std::fprintf(stderr, "the API macros do not reach the library's argument checks\n");
                return 1;
        }
        if (std::strcmp(dsv32_version(), DSV32_VERSION_STRING) != 0 ||
            DSV32_VERSION_NUMBER != DSV32_VERSION_ENCODE(DSV32_VERSION_MAJOR, DSV32_VERSION_MINOR, DSV32_VERSION_PATCH)) {
                std::fprintf(stderr, "dsv32.h says version %s, the library %s: update DSV32_VERSION_* in client/dsv32.h\n",
                             DSV32_VERSION_STRING, dsv32_version());
                return 1;
        }
        return 0;
}
