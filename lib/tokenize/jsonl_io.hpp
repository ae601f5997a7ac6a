// Private to lib/tokenize: the JSON Lines stdio modes shared by encode and decode
// ({"text": ...} <-> {"ids": [...]}, one output line per input line, flushed per line).
// reference: man/ds-tokenize.1 (encode --jsonl, decode --jsonl).
#pragma once
#include <iosfwd>

#include "ds/tokenize/tokenize.hpp"

namespace ds::tokenize::detail {

void decode_jsonl(const DecodeOptions& opts, std::istream& in, std::ostream& out);

}  // namespace ds::tokenize::detail
