// dsv32.h compiles as C++ (no C-only constructs, extern "C" linkage) and links.
#include <dsv32.h>

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
        return 0;
}
