// DeepSeek-V3 chat template: exact strings for plain, multi-system, multi-turn and tool
// chats; target spans; template recognition from tokenizer_config.json; and, with the
// shared data, the rendered text tokenised by the real tokenizer (BOS 0, User 128803,
// Assistant 128804, EOS 1) plus streaming detokenisation with TokenText.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/infer/chat_template.hpp"
#include "ds/infer/stop.hpp"
#include "ds/io/file.hpp"
#include "ds/tokenizer/tokenizer.hpp"
#include "ds/tokenizer/bpe_trainer.hpp"
#include "ds/tokenizer/utf8.hpp"

using namespace ds::infer;
namespace fs = std::filesystem;

namespace {

const std::string B = "<｜begin▁of▁sentence｜>", E = "<｜end▁of▁sentence｜>";
const std::string U = "<｜User｜>", A = "<｜Assistant｜>";

ChatMessage msg(std::string role, std::string content) {
  return {std::move(role), std::move(content), {}};
}

std::string sub(const std::string& s, TextSpan t) { return s.substr(t.begin, t.end - t.begin); }

fs::path shared() { return fs::path(DS_SHARED_DATA) / "deepseek_v3_tokenizer"; }

}  // namespace

TEST_CASE("plain chats render exactly") {
  const ChatTemplate t = ChatTemplate::deepseek_v3();
  CHECK(t.render({msg("user", "Hi")}, true).text == B + U + "Hi" + A);
  CHECK(t.render({msg("user", "Hi")}, false).text == B + U + "Hi");
  CHECK(t.render({msg("system", "Be brief."), msg("user", "Hi")}, true).text ==
        B + "Be brief." + U + "Hi" + A);
  CHECK(t.render({}, true).text == B + A);
}

TEST_CASE("multi-system and multi-turn render exactly, with target spans") {
  const ChatTemplate t = ChatTemplate::deepseek_v3();
  const std::vector<ChatMessage> m = {msg("system", "S1"), msg("user", "u1"),
                                      msg("assistant", "a1"), msg("system", "S2"),
                                      msg("user", "u2"), msg("assistant", "a2")};
  const RenderedChat r = t.render(m, false);
  CHECK(r.text == B + "S1\n\nS2" + U + "u1" + A + "a1" + E + U + "u2" + A + "a2" + E);
  REQUIRE(r.spans.size() == 6);
  CHECK(sub(r.text, r.spans[2].target) == "a1" + E);
  CHECK(sub(r.text, r.spans[2].all) == A + "a1" + E);
  CHECK(sub(r.text, r.spans[5].target) == "a2" + E);
  CHECK(sub(r.text, r.spans[1].all) == U + "u1");
  CHECK(r.spans[1].target.begin == r.spans[1].target.end);
  CHECK(r.spans[0].all.begin == r.spans[0].all.end);   // system text sits after BOS
  // Everything outside the targets is prompt.
  size_t target_chars = 0;
  for (const MessageSpan& s : r.spans) target_chars += s.target.end - s.target.begin;
  CHECK(target_chars == 2 * (2 + E.size()));
}

TEST_CASE("tool calls and outputs follow the Dec-2024 template, quirks included") {
  const ChatTemplate t = ChatTemplate::deepseek_v3();
  ChatMessage call{"assistant", std::nullopt, {{"function", "f", "{\"x\":1}"},
                                               {"function", "g", "{}"}}};
  const std::vector<ChatMessage> m = {msg("user", "q"), call, msg("tool", "r1"),
                                      msg("tool", "r2"), msg("assistant", "done")};
  const RenderedChat r = t.render(m, true);
  const std::string cb = "<｜tool▁call▁begin｜>function<｜tool▁sep｜>", ce = "<｜tool▁call▁end｜>";
  const std::string body_f = cb + "f\n```json\n{\"x\":1}\n```" + ce;
  const std::string body_g = cb + "g\n```json\n{}\n```" + ce;
  const std::string ob = "<｜tool▁output▁begin｜>", oe = "<｜tool▁output▁end｜>";
  const std::string want = B + U + "q" + A + "<｜tool▁calls▁begin｜>" + body_f + "\n" +
                           body_g + "<｜tool▁calls▁end｜>" + E + "<｜tool▁outputs▁begin｜>" +
                           ob + "r1" + oe + "\n" + ob + "r2" + oe + "<｜tool▁outputs▁end｜>" +
                           "done" + E + A;
  CHECK(r.text == want);
  CHECK(sub(r.text, r.spans[4].target) == "done" + E);
  CHECK(sub(r.text, r.spans[1].target).rfind("<｜tool▁calls▁begin｜>", 0) == 0);
  // The template never resets is_first / is_output_first: a later tool-call turn loses its
  // Assistant tag and later tool outputs their outputs-begin tag (checked with jinja2).
  ChatMessage c1{"assistant", std::nullopt, {{"function", "f", "{}"}}};
  const std::string body = cb + "f\n```json\n{}\n```" + ce;
  const RenderedChat q = t.render({msg("user", "q"), c1, msg("tool", "r"), msg("assistant", "a"),
                                   msg("user", "q2"), c1, msg("tool", "r2")}, true);
  CHECK(q.text == B + U + "q" + A + "<｜tool▁calls▁begin｜>" + body +
                      "<｜tool▁outputs▁begin｜>" + ob + "r" + oe + "<｜tool▁outputs▁end｜>a" +
                      E + U + "q2\n" + body + "<｜tool▁calls▁end｜>" + E + "\n" + ob + "r2" +
                      oe + "<｜tool▁outputs▁end｜>");
  CHECK(sub(q.text, q.spans[5].target) == sub(q.text, q.spans[5].all));
  // Ending on tool output: close the outputs and add no generation prompt.
  const RenderedChat r2 = t.render({msg("user", "q"), call, msg("tool", "r1")}, true);
  CHECK(r2.text.size() > 0);
  CHECK(r2.text.substr(r2.text.size() - std::string("<｜tool▁outputs▁end｜>").size()) ==
        "<｜tool▁outputs▁end｜>");
}

TEST_CASE("invalid messages are FormatErrors naming the message") {
  const ChatTemplate t = ChatTemplate::deepseek_v3();
  CHECK_THROWS_WITH_AS(t.render({msg("robot", "x")}, true), doctest::Contains("messages[0]"),
                       ds::FormatError);
  CHECK_THROWS_AS(t.render({{"user", std::nullopt, {}}}, true), ds::FormatError);
  CHECK_THROWS_AS(t.render({{"assistant", std::nullopt, {}}}, true), ds::FormatError);
  // tool calls the template would drop: on another role, or beside a content
  const std::vector<ToolCall> calls = {{"function", "f", "{}"}};
  CHECK_THROWS_WITH_AS(t.render({{"user", "hi", calls}, msg("assistant", "x")}, false),
                       doctest::Contains("messages[0]: tool_calls on a user turn"),
                       ds::FormatError);
  CHECK_THROWS_WITH_AS(t.render({msg("user", "q"), {"tool", "r", calls}}, true),
                       doctest::Contains("messages[1]: tool_calls on a tool turn"),
                       ds::FormatError);
  CHECK_THROWS_WITH_AS(t.render({msg("user", "q"), {"assistant", "", calls}}, false),
                       doctest::Contains("messages[1]: an assistant turn with both content and "
                                         "tool_calls"),
                       ds::FormatError);
}

TEST_CASE("parse_messages reads OpenAI-style JSON") {
  const auto m = parse_messages(
      R"({"messages":[{"role":"system","content":"s"},{"role":"assistant","content":null,
      "tool_calls":[{"type":"function","function":{"name":"f","arguments":{"a":1}}}]}]})",
      "chat.json");
  REQUIRE(m.size() == 2);
  CHECK(m[0].content == "s");
  CHECK_FALSE(m[1].content.has_value());
  REQUIRE(m[1].tool_calls.size() == 1);
  CHECK(m[1].tool_calls[0].name == "f");
  CHECK(m[1].tool_calls[0].arguments == "{\"a\":1}");
  CHECK_THROWS_WITH_AS(parse_messages(R"([{"role":"user","content":3}])", "chat.json"),
                       doctest::Contains("chat.json: messages[0].content"), ds::FormatError);
  CHECK_THROWS_AS(parse_messages("[{]", "chat.json"), ds::FormatError);
  // a call without arguments rendered as the text "null"
  CHECK_THROWS_WITH_AS(parse_messages(R"([{"role":"assistant","content":null,"tool_calls":
                                      [{"function":{"name":"f"}}]}])", "chat.json"),
                       doctest::Contains("messages[0].tool_calls[0].function.arguments missing"),
                       ds::FormatError);
  CHECK_THROWS_AS(parse_messages(R"([{"role":"user","content":"x","n":1e999}])", "chat.json"),
                  ds::FormatError);   // a number beyond a double: not a parse_error in nlohmann
}

TEST_CASE("tokenizer_config.json: token fields and template recognition") {
  auto config = [](nlohmann::json bos, nlohmann::json eos, const std::string& tmpl) {
    return nlohmann::json{{"bos_token", bos}, {"eos_token", eos}, {"chat_template", tmpl}}.dump();
  };
  const std::string plain(ds::tok::ds_chat_template());
  const ChatTemplate t = ChatTemplate::from_config_json(
      config(nlohmann::json{{"content", B}}, E, plain), "tc.json");
  CHECK(t.bos_token() == B);
  CHECK(t.eos_token() == E);
  // V3's markers alone are not V3's template: a derived one would be rendered as V3's
  const std::string v3_like =
      "{% set ns = namespace(is_tool=false, system_prompt='') %}{{'" + U + "'}}{{'" + A +
      "' + message['content'] + '" + E + "'}}{{'<｜tool▁outputs▁end｜>'}}";
  CHECK_FALSE(is_deepseek_v3_template(v3_like));
  CHECK_THROWS_WITH_AS(ChatTemplate::from_config_json(config(B, E, v3_like), "tc.json"),
                       doctest::Contains("tc.json: chat_template: unsupported chat template"),
                       ds::FormatError);
  const std::string chatml = "{% for m in messages %}<|im_start|>{{m.role}}{% endfor %}";
  CHECK_THROWS_WITH_AS(ChatTemplate::from_config_json(config("<s>", "</s>", chatml), "tc.json"),
                       doctest::Contains("tc.json: chat_template: unsupported chat template"),
                       ds::FormatError);
  CHECK_THROWS_AS(ChatTemplate::from_config_json(R"({"eos_token": "x"})", "tc.json"),
                  ds::FormatError);
  CHECK_THROWS_AS(ChatTemplate::from_config_json("{", "tc.json"), ds::FormatError);
  // an empty BOS or EOS could not delimit the turns
  CHECK_THROWS_WITH_AS(ChatTemplate::from_config_json(config("", "x", plain), "tc.json"),
                       doctest::Contains("tc.json: bos_token is empty"), ds::FormatError);
  CHECK_THROWS_WITH_AS(
      ChatTemplate::from_config_json(config("b", nlohmann::json{{"content", ""}}, plain),
                                     "tc.json"),
      doctest::Contains("tc.json: eos_token is empty"), ds::FormatError);
  CHECK_THROWS_WITH_AS(
      ChatTemplate::from_config_json(config(nlohmann::json{{"content", 3}}, "x", plain),
                                     "tc.json"),
      doctest::Contains("bos_token must be a string"), ds::FormatError);
}

TEST_CASE("real DeepSeek-V3 template: only its exact text is recognised") {
  if (!fs::exists(shared() / "tokenizer_config.json")) {
    MESSAGE("skipped: no shared data at " << shared().string());
    return;
  }
  const auto cfg = nlohmann::json::parse(ds::io::read_file(shared() / "tokenizer_config.json"));
  const std::string v3 = cfg.at("chat_template").get<std::string>();
  CHECK(is_deepseek_v3_template(v3));
  // derived templates seen in the wild, each rendering differently from V3's
  auto edited = [&](const std::string& from, const std::string& to) {
    std::string s = v3;
    const size_t at = s.find(from);
    REQUIRE(at != std::string::npos);
    return s.replace(at, from.size(), to);
  };
  const std::string gen = "{{'" + A + "'}}{% endif %}";
  CHECK_FALSE(is_deepseek_v3_template(edited(gen, "{{'" + A + "<think>\n'}}{% endif %}")));
  CHECK_FALSE(is_deepseek_v3_template(v3 + "\n"));
  CHECK_FALSE(is_deepseek_v3_template(edited("'\n\n' + ", "")));
}

TEST_CASE("real DeepSeek-V3 files: config recognised, ids of the rendered chat") {
  if (!fs::exists(shared() / "tokenizer.json")) {
    MESSAGE("skipped: no shared data at " << shared().string());
    return;
  }
  const ChatTemplate t = ChatTemplate::from_tokenizer_config(shared() / "tokenizer_config.json");
  CHECK(t.bos_token() == B);
  CHECK(t.eos_token() == E);
  const auto tok = ds::tok::Tokenizer::from_file(shared() / "tokenizer.json");
  const RenderedChat r = t.render({msg("system", "You are helpful."), msg("user", "hello world"),
                                   msg("assistant", "Hi!"), msg("user", "Bye")}, true);
  const auto ids = tok.encode(r.text);
  REQUIRE(ids.size() > 6);
  CHECK(ids.front() == 0);
  CHECK(ids.back() == 128804);
  auto count = [&](uint32_t id) { return std::count(ids.begin(), ids.end(), id); };
  CHECK(count(0) == 1);
  CHECK(count(128803) == 2);
  CHECK(count(128804) == 2);
  CHECK(count(1) == 1);
  CHECK(tok.decode(ids) == r.text);

  // Streaming the ids back with TokenText reproduces decode(skip_special = true).
  const TokenText text(tok);
  CHECK(text.is_special(1));
  CHECK(text.bytes(0).empty());
  CHECK_FALSE(text.is_special(128804));   // role tokens are not special: they decode
  const auto hello = tok.encode("Hello 🌍 World! 你好");
  StopChecker c({.stop_ids = {1}, .max_new_tokens = 1000, .stop_strings = {}});
  std::string streamed;
  for (uint32_t id : hello) {
    c.push(id, text.bytes(id));
    const std::string part = c.take_stream();
    CHECK_FALSE(ds::tok::first_invalid_utf8(part));
    streamed += part;
  }
  c.push(1, text.bytes(1));
  streamed += c.take_stream();
  CHECK(streamed == "Hello 🌍 World! 你好");
  CHECK(c.text() == streamed);
}

TEST_CASE("the chat template ds-tokenize writes is accepted and renders DeepSeek-V3 chats") {
  ds::tok::BpeTrainerOptions o;
  o.vocab_size = 300;
  ds::tok::BpeTrainer trainer(o);
  trainer.add_text("hello world, hello chat");
  const auto tok = ds::tok::Tokenizer::from_json(trainer.train(), "trained tokenizer.json");
  auto t = ds::infer::ChatTemplate::from_config_json(trainer.tokenizer_config_json(), "trained");
  CHECK_NOTHROW(t.check_tokens(tok, "trained"));
  // A bos_token that is not a token would be rendered as text: refused, naming the file.
  auto cfg = nlohmann::json::parse(trainer.tokenizer_config_json());
  cfg["bos_token"] = "<nope>";
  const auto bad = ds::infer::ChatTemplate::from_config_json(cfg.dump(), "cfg.json");
  CHECK_THROWS_WITH_AS(bad.check_tokens(tok, "cfg.json"),
                       doctest::Contains("cfg.json: bos_token '<nope>' is not one token"),
                       ds::FormatError);
  // ... or another token than the tokenizer's BOS (ds-sft blamed the first data line)
  cfg["bos_token"] = std::string(ds::tok::special::kUser);
  const auto other = ds::infer::ChatTemplate::from_config_json(cfg.dump(), "cfg.json");
  CHECK_THROWS_WITH_AS(other.check_tokens(tok, "cfg.json"),
                       doctest::Contains("is not the tokenizer's BOS token"), ds::FormatError);
  std::vector<ds::infer::ChatMessage> m(1);
  m[0].role = "user";
  m[0].content = "hi";
  CHECK(t.render(m, true).text == std::string(ds::tok::special::kBos) +
                                      std::string(ds::tok::special::kUser) + "hi" +
                                      std::string(ds::tok::special::kAssistant));
  // It renders no tools: a tool turn or call is refused rather than trained on a rendering
  // the shipped template does not produce (Hugging Face would drop the tool turn).
  const auto tool_chat = parse_messages(
      R"([{"role":"user","content":"q"},{"role":"assistant","content":null,"tool_calls":
      [{"type":"function","function":{"name":"f","arguments":"{}"}}]},
      {"role":"tool","content":"r"},{"role":"assistant","content":"a"}])", "chat.json");
  CHECK_THROWS_WITH_AS(t.render(tool_chat, false),
                       doctest::Contains("messages[1]: tool_calls under the chat template of "
                                         "trained"), ds::FormatError);
  std::vector<ChatMessage> tool_turn = {msg("user", "q"), msg("tool", "r"), msg("assistant", "a")};
  CHECK_THROWS_WITH_AS(t.render(tool_turn, false), doctest::Contains("messages[1]: a tool turn"),
                       ds::FormatError);
  CHECK_NOTHROW(ChatTemplate::deepseek_v3().render(tool_chat, false));   // V3's own renders them
}
