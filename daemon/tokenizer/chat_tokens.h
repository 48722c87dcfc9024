/* The DeepSeek-V3.2 chat format's marker strings (U+FF5C FULLWIDTH VERTICAL LINE, U+2581
 * LOWER ONE EIGHTH BLOCK). */
#pragma once

#define BOS "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define EOS "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define USER "<\xef\xbd\x9cUser\xef\xbd\x9c>"
#define ASSISTANT "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>"
#define THINK_START "<think>"
#define THINK_END "</think>"
#define DSML "\xef\xbd\x9c" "DSML\xef\xbd\x9c"
