// SFT data: loss masks from the chat template (assistant content + EOS exactly; system and
// user tokens never targets; --loss-on last / all), prompt/completion = user + assistant,
// span boundaries on token boundaries, and every malformed input rejected with FILE:LINE
// and the field in the message.
// reference: include/ds/sft/data.hpp; spec §8.6 ("SFT target: assistant content + EOS").
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "ds/core/error.hpp"
#include "ds/io/file.hpp"
#include "sft_test_util.hpp"

using namespace ds::sft;
using ds_sft_test::small_kit;
using ds_sft_test::target_runs;
namespace sp = ds::tok::special;

namespace {

const std::string kChat =
    R"({"messages": [{"role": "system", "content": "Answer briefly."},)"
    R"( {"role": "user", "content": "Who went up to the mountain?"},)"
    R"( {"role": "assistant", "content": "The king."},)"
    R"( {"role": "user", "content": "Say it in full."},)"
    R"( {"role": "assistant", "content": "The king went up to the mountain."}]})";

Sample tokenize_line(const std::string& line, LossOn on, const ds_sft_test::TokKit& kit,
                     int64_t max_tokens = 0, bool truncate = false) {
  auto msgs = parse_example(line, "t.jsonl:1", on);
  return tokenize_example(msgs, *kit.tmpl, *kit.tok, TokenizeOptions{on, max_tokens, truncate},
                          "t.jsonl:1");
}

// Every target run is "content<EOS>" and is preceded by the Assistant token.
void check_assistant_mask(const Sample& s, const ds_sft_test::TokKit& kit,
                          const std::vector<std::string>& expect) {
  const std::string eos(sp::kEos);
  std::vector<std::string> want;
  for (const auto& e : expect) want.push_back(e + eos);
  CHECK(target_runs(s, *kit.tok) == want);
  const uint32_t assistant = *kit.tok->token_to_id(sp::kAssistant);
  for (size_t i = 1; i < s.tokens.size(); ++i)
    if (s.target[i] && !s.target[i - 1]) CHECK(uint32_t(s.tokens[i - 1]) == assistant);
  CHECK(s.target[0] == 0);
  CHECK(uint32_t(s.tokens[0]) == *kit.tok->bos_id());
  CHECK(uint32_t(s.tokens.back()) == *kit.tok->eos_id());
  int64_t n = 0;
  for (auto t : s.target) n += t;
  CHECK(n == s.n_targets);
}

template <class E, class F>
void check_throws(F&& f, const std::string& needle) {
  CAPTURE(needle);
  try {
    f();
    FAIL("no error");
  } catch (const E& e) {
    const std::string m = e.what();
    CAPTURE(m);
    CHECK(m.find(needle) != std::string::npos);
  }
}

void check_error(const std::string& line, LossOn on, const std::string& needle) {
  CAPTURE(line);
  CAPTURE(needle);
  try {
    parse_example(line, "data.jsonl:7", on);
    FAIL("no error");
  } catch (const ds::FormatError& e) {
    const std::string m = e.what();
    CAPTURE(m);
    CHECK(m.rfind("data.jsonl:7: ", 0) == 0);
    CHECK(m.find(needle) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("assistant-only mask covers exactly each assistant content + EOS") {
  const auto& kit = small_kit();
  Sample s = tokenize_line(kChat, LossOn::assistant, kit);
  check_assistant_mask(s, kit, {"The king.", "The king went up to the mountain."});
  // system and user text is never a target: the non-target tokens hold them
  std::string rest;
  for (size_t i = 0; i < s.tokens.size(); ++i)
    if (!s.target[i]) rest += kit.tok->token_bytes(uint32_t(s.tokens[i]));
  CHECK(rest == std::string(sp::kBos) + "Answer briefly." + std::string(sp::kUser) +
                    "Who went up to the mountain?" + std::string(sp::kAssistant) +
                    std::string(sp::kUser) + "Say it in full." + std::string(sp::kAssistant));
}

TEST_CASE("--loss-on last and all") {
  const auto& kit = small_kit();
  Sample last = tokenize_line(kChat, LossOn::last, kit);
  CHECK(target_runs(last, *kit.tok) ==
        std::vector<std::string>{"The king went up to the mountain." + std::string(sp::kEos)});
  Sample all = tokenize_line(kChat, LossOn::all, kit);
  CHECK(all.target[0] == 0);
  CHECK(all.n_targets == int64_t(all.tokens.size()) - 1);
  // a conversation ending with a user turn: an error unless --loss-on all
  const std::string open = R"({"messages": [{"role": "user", "content": "Hi there"}]})";
  check_error(open, LossOn::assistant, "messages[0]: the conversation ends with a user turn");
  check_error(open, LossOn::last, "not an assistant turn");
  CHECK(tokenize_line(open, LossOn::all, kit).n_targets > 0);
}

TEST_CASE("prompt/completion renders as a user turn and an assistant turn") {
  const auto& kit = small_kit();
  Sample a = tokenize_line(
      R"({"prompt": "Who went up?", "completion": "The king.", "system": "Be brief."})",
      LossOn::assistant, kit);
  Sample b = tokenize_line(
      R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who went up?"},)"
      R"( {"role": "assistant", "content": "The king."}]})",
      LossOn::assistant, kit);
  CHECK(a.tokens == b.tokens);
  CHECK(a.target == b.target);
  check_assistant_mask(a, kit, {"The king."});
}

TEST_CASE("the real DeepSeek-V3 tokenizer: masks on token boundaries") {
  const auto& kit = ds_sft_test::deepseek_kit();
  if (!kit.tok) return;   // ../shared/data absent
  Sample s = tokenize_line(kChat, LossOn::assistant, kit);
  check_assistant_mask(s, kit, {"The king.", "The king went up to the mountain."});
  CHECK(s.tokens[0] == 0);
  CHECK(s.tokens.back() == 1);
}

TEST_CASE("the real DeepSeek-V3 tokenizer: a tool-call turn after a question") {
  // V3 renders a tool-call turn after another turn as "\n<｜tool▁call▁begin｜>...", and the
  // question's "?" and that "\n" are one token: the target starts at the next token (it was an
  // error blaming the tokenizer)
  const auto& kit = ds_sft_test::deepseek_kit();
  if (!kit.tok) return;   // ../shared/data absent
  const std::string call =
      R"({"type": "function", "function": {"name": "get_weather", "arguments": "{}"}})";
  const std::string line =
      R"({"messages": [{"role": "user", "content": "Weather in Paris?"},)"
      R"( {"role": "assistant", "content": null, "tool_calls": [)" + call + R"(]},)"
      R"( {"role": "tool", "content": "20"}, {"role": "assistant", "content": "It is 20C."},)"
      R"( {"role": "user", "content": "And in Rome?"},)"
      R"( {"role": "assistant", "content": null, "tool_calls": [)" + call + R"(]},)"
      R"( {"role": "tool", "content": "25"}, {"role": "assistant", "content": "It is 25C."}]})";
  const Sample s = tokenize_line(line, LossOn::assistant, kit);
  const auto runs = target_runs(s, *kit.tok);
  REQUIRE(runs.size() == 4);
  CHECK(runs[2].rfind("<｜tool▁call▁begin｜>function", 0) == 0);
  CHECK(runs[3] == "It is 25C." + std::string(sp::kEos));
  size_t a = 0;   // the first token of the third run, and the token before it: "?\n"
  for (size_t i = 1, n = 0; i < s.tokens.size(); ++i)
    if (s.target[i] && !s.target[i - 1] && ++n == 3) a = i;
  REQUIRE(a > 0);
  CHECK(kit.tok->token_bytes(uint32_t(s.tokens[a - 1])) == "?\n");
  CHECK(s.target[a - 1] == 0);
}

TEST_CASE("a tokenizer without the chat tokens: target boundary inside a token is an error") {
  // Only BOS/EOS are added tokens; "|>" + "!!" is learned as one token, so the assistant
  // content "!!" starts inside the token that also ends the Assistant tag.
  ds::tok::BpeTrainerOptions o;
  o.vocab_size = 300;
  o.min_frequency = 2;
  o.threads = 1;
  o.special_tokens = {std::string(sp::kBos), std::string(sp::kEos)};
  ds::tok::BpeTrainer trainer(o);
  for (int i = 0; i < 50; ++i) trainer.add_text(std::string(sp::kAssistant) + "!!" + " ");
  ds_sft_test::TokKit kit;
  kit.tok =
      std::make_unique<ds::tok::Tokenizer>(ds::tok::Tokenizer::from_json(trainer.train(), "bare"));
  kit.tmpl = std::make_unique<ds::infer::ChatTemplate>(ds::infer::ChatTemplate::deepseek_v3());
  const std::string line = R"({"prompt": "q", "completion": "!!"})";
  check_throws<ds::FormatError>([&] { tokenize_line(line, LossOn::assistant, kit); },
                 "t.jsonl:1: messages[1]: the assistant target starts inside a token");
}

TEST_CASE("malformed lines: errors name the line and the field") {
  const LossOn A = LossOn::assistant;
  check_error("{\"messages\": [", A, "invalid JSON at byte");
  check_error("{\"prompt\": \"q\xff\", \"completion\": \"a\"}", A,
              "invalid UTF-8 at byte 13 of the line");
  check_error(R"({"prompt": "q", "completion": "a", "n": 6e666})", A,
              "invalid JSON: ");  // overflow
  check_error("[1, 2]", A, "not a JSON object");
  check_error(R"({"text": "hello"})", A,
              "expected \"messages\" (a chat) or \"prompt\" and \"completion\"");
  check_error(R"({"messages": {}})", A, "messages: must be an array");
  check_error(R"({"messages": []})", A, "messages: empty conversation");
  check_error(R"({"messages": [3]})", A, "messages[0]: not an object");
  check_error(R"({"messages": [{"content": "x"}]})", A, "messages[0].role: missing");
  check_error(
      R"({"messages": [{"role": "user", "content": "x"}, {"role": "bot", "content": "y"}]})", A,
      "messages[1].role: unknown role \"bot\"");
  check_error(
      R"({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "y"}]})",
      A, "messages[0].content: empty");
  check_error(
      R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " \n"}]})",
      A, "messages[1].content: empty");
  check_error(R"({"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]})", A,
              "messages[0].content: missing");
  check_error(
      R"({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]})", A,
      "messages[0].content: must be a string");
  check_error(
      R"({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"},)"
      R"( {"role": "assistant", "content": "y"}]})",
      A, "messages[1]: a system message after");
  check_error(R"({"messages": [{"role": "system", "content": "s"}]})", A, "only system messages");
  check_error(R"({"prompt": "x"})", A, "completion: missing");
  check_error(R"({"prompt": "", "completion": "y"})", A, "prompt: empty");
  check_error(R"({"prompt": "x", "completion": "y", "system": 1})", A, "system: must be a string");
}

TEST_CASE("files: line numbers count blank lines; empty files; too long samples") {
  const auto& kit = small_kit();
  auto dir = ds_sft_test::scratch_dir("data");
  const std::string good = R"({"prompt": "Who went up?", "completion": "The king."})";
  auto f = ds_sft_test::write_file(
      dir / "a.jsonl",
      good + "\n\n" + good + "\n" + R"({"messages": [{"role": "robot", "content": "x"}]})" + "\n");
  TokenizeOptions topt{LossOn::assistant, 0, false};
  check_throws<ds::FormatError>([&] { load_samples({f}, *kit.tmpl, *kit.tok, topt, 2); },
                 f + ":4: messages[0].role: unknown role \"robot\"");
  auto empty = ds_sft_test::write_file(dir / "empty.jsonl", "\n  \n");
  check_throws<ds::FormatError>([&] { load_samples({empty}, *kit.tmpl, *kit.tok, topt, 1); },
                 empty + ": no samples (empty file)");
  CHECK_THROWS_AS(load_samples({(dir / "missing.jsonl").string()}, *kit.tmpl, *kit.tok, topt, 1),
                  ds::IoError);
  // a UTF-8 byte-order mark and CRLF line ends are accepted
  auto bom =
      ds_sft_test::write_file(dir / "bom.jsonl", "\xEF\xBB\xBF" + good + "\r\n" + good + "\r\n");
  CHECK(load_samples({bom}, *kit.tmpl, *kit.tok, topt, 1).samples.size() == 2);
  // the first bad line in file order is reported, whatever the thread split
  std::string many;
  for (int i = 0; i < 200; ++i) many += (i == 150 || i == 199 ? R"({"prompt": "x"})" : good) + "\n";
  auto m = ds_sft_test::write_file(dir / "many.jsonl", many);
  check_throws<ds::FormatError>([&] { load_samples({m}, *kit.tmpl, *kit.tok, topt, 4); },
                 m + ":151: completion: missing");
  // length limit: error naming the line, or truncation
  auto g = ds_sft_test::write_file(dir / "g.jsonl", good + "\n" + good + "\n");
  const int64_t len =
      int64_t(load_samples({g}, *kit.tmpl, *kit.tok, topt, 1).samples[0].tokens.size());
  topt.max_tokens = len - 2;
  check_throws<ds::FormatError>([&] { load_samples({g}, *kit.tmpl, *kit.tok, topt, 1); },
                 g + ":1: the sample has " + std::to_string(len) + " tokens");
  topt.truncate = true;
  SampleSet t = load_samples({g}, *kit.tmpl, *kit.tok, topt, 1);
  REQUIRE(t.samples.size() == 2);
  CHECK(t.truncated == 2);
  CHECK(int64_t(t.samples[0].tokens.size()) == len - 2);
  CHECK(t.samples[1].line == 2);
  // truncated so far that no target is left: dropped, not trained on
  topt.max_tokens = 3;
  SampleSet d = load_samples({g}, *kit.tmpl, *kit.tok, topt, 1);
  CHECK(d.samples.empty());
  CHECK(d.dropped == 2);
}

TEST_CASE("files fingerprint changes with the content") {
  auto dir = ds_sft_test::scratch_dir("fp");
  auto a = ds_sft_test::write_file(dir / "a.jsonl", "x\n");
  const std::string f1 = files_fingerprint({a});
  ds_sft_test::write_file(dir / "a.jsonl", "y\n");
  CHECK(files_fingerprint({a}) != f1);
  CHECK(files_fingerprint({a}).size() == 16);
  CHECK(parse_loss_on("last") == LossOn::last);
  CHECK_THROWS_AS(parse_loss_on("everything"), ds::UsageError);
}

TEST_CASE("a FIFO's samples and fingerprint come from its one read (a pipe, <(zcat f.gz))") {
  const auto& kit = small_kit();
  auto dir = ds_sft_test::scratch_dir("fifo");
  const std::string text = R"({"prompt": "Who went up?", "completion": "The king."})" "\n";
  const auto regular = ds_sft_test::write_file(dir / "a.jsonl", text);
  const std::string fifo = (dir / "a.fifo").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::thread writer([&] { ds::io::write_file_atomic(fifo, text); });
  TokenizeOptions topt{LossOn::assistant, 0, false};
  size_t n = 0;
  CHECK_NOTHROW(n = load_samples({fifo}, *kit.tmpl, *kit.tok, topt, 1).samples.size());
  const int unblock = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);   // should the read fail
  writer.join();
  ::close(unblock);
  CHECK(n == 1);
  // a second read of the FIFO would wait for a writer forever (or, on a pipe, read nothing)
  CHECK(files_fingerprint({fifo}) == files_fingerprint({regular}));
}
