// Native renderer of the original DeepSeek-V3 chat template (see chat_template.hpp). The
// state flags mirror the Jinja namespace (is_first, is_tool, is_output_first) and, like the
// template, are never reset between assistant turns -- that quirk is part of the format.
// reference: spec §8.6; deepseek-ai/DeepSeek-V3 tokenizer_config.json chat_template.
#include "ds/infer/chat_template.hpp"
#include "ds/tokenizer/bpe_trainer.hpp"

#include <nlohmann/json.hpp>

#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/io/file.hpp"
#include "ds/io/json_input.hpp"
#include "ds/tokenizer/tokenizer.hpp"

namespace ds::infer {

namespace {

using json = nlohmann::json;
namespace sp = tok::special;

// Tool tokens (U+FF5C bars, U+2581 spaces), spelled as in the template.
constexpr std::string_view kToolCallsBegin = "<｜tool▁calls▁begin｜>";
constexpr std::string_view kToolCallsEnd = "<｜tool▁calls▁end｜>";
constexpr std::string_view kToolCallBegin = "<｜tool▁call▁begin｜>";
constexpr std::string_view kToolCallEnd = "<｜tool▁call▁end｜>";
constexpr std::string_view kToolSep = "<｜tool▁sep｜>";
constexpr std::string_view kToolOutputsBegin = "<｜tool▁outputs▁begin｜>";
constexpr std::string_view kToolOutputsEnd = "<｜tool▁outputs▁end｜>";
constexpr std::string_view kToolOutputBegin = "<｜tool▁output▁begin｜>";
constexpr std::string_view kToolOutputEnd = "<｜tool▁output▁end｜>";

std::string cat(std::initializer_list<std::string_view> parts) {
  std::string s;
  for (std::string_view p : parts) s.append(p);
  return s;
}

std::string tool_call_body(const ToolCall& t) {
  return cat({kToolCallBegin, t.type, kToolSep, t.name, "\n```json\n", t.arguments, "\n```",
              kToolCallEnd});
}

// A token string field: "text" or {"content": "text", ...}.
std::string token_field(const json& cfg, const char* key, const std::string& source) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) DS_THROW(FormatError, "{}: missing {}", source, key);
  const json* v = &*it;
  if (v->is_object() && v->contains("content")) v = &(*v)["content"];
  if (!v->is_string())
    DS_THROW(FormatError, "{}: {} must be a string or an object with a string \"content\"",
             source, key);
  if (v->get_ref<const std::string&>().empty())
    DS_THROW(FormatError, "{}: {} is empty", source, key);   // turns could not be delimited
  return v->get<std::string>();
}

// Jinja-namespace state of the template.
struct State {
  bool is_first = false;
  bool is_tool = false;
  bool is_output_first = true;
};

const std::string& need_content(const ChatMessage& m, size_t i) {
  if (!m.content) DS_THROW(FormatError, "messages[{}]: role {} needs a content", i, m.role);
  return *m.content;
}

// Renders message i (not system) into `out`; returns its target span.
TextSpan render_one(const ChatMessage& m, size_t i, State& ns, std::string& out) {
  TextSpan target{out.size(), out.size()};
  if (m.role == "user") {
    ns.is_tool = false;
    out += cat({sp::kUser, need_content(m, i)});
  } else if (m.role == "assistant" && !m.content) {
    if (m.tool_calls.empty())
      DS_THROW(FormatError, "messages[{}]: assistant turn with null content and no tool_calls",
               i);
    ns.is_tool = false;
    for (const ToolCall& t : m.tool_calls) {
      if (!ns.is_first) {
        out += sp::kAssistant;
        target.begin = out.size();
        out += cat({kToolCallsBegin, tool_call_body(t)});
        ns.is_first = true;
      } else {
        out += cat({"\n", tool_call_body(t), kToolCallsEnd, sp::kEos});
      }
    }
  } else if (m.role == "assistant") {
    out += ns.is_tool ? kToolOutputsEnd : sp::kAssistant;
    ns.is_tool = false;
    target.begin = out.size();
    out += cat({*m.content, sp::kEos});
  } else if (m.role == "tool") {
    ns.is_tool = true;
    if (ns.is_output_first) {
      out += cat({kToolOutputsBegin, kToolOutputBegin, need_content(m, i), kToolOutputEnd});
      ns.is_output_first = false;
    } else {
      out += cat({"\n", kToolOutputBegin, need_content(m, i), kToolOutputEnd});
    }
  } else {
    DS_THROW(FormatError, "messages[{}]: unknown role \"{}\" (system, user, assistant, tool)",
             i, m.role);
  }
  if (m.role != "assistant") target.begin = out.size();
  target.end = out.size();
  return target;
}

}  // namespace

bool is_deepseek_v3_template(std::string_view j) {
  // XXH64 of the chat_template of DeepSeek-V3's published tokenizer_config.json (2,301 UTF-8
  // bytes). Only that exact text is known to render as render() does: templates derived from
  // it keep its markers but differ (last system message only, "<think>\n" after the
  // generation prompt, V3-0324's tool calls), so markers are not enough.
  constexpr uint64_t kV3Dec2024 = 0x71a67db741264d08ull;
  return xxh64(j) == kV3Dec2024;
}

ChatTemplate ChatTemplate::deepseek_v3() {
  ChatTemplate t;
  t.bos_ = std::string(sp::kBos);
  t.eos_ = std::string(sp::kEos);
  return t;
}

ChatTemplate ChatTemplate::from_tokenizer_config(const std::filesystem::path& path) {
  return from_config_json(io::read_file(path), path.string());
}

ChatTemplate ChatTemplate::from_config_json(std::string_view text, const std::string& source) {
  io::check_json_input(text, source);
  json cfg;
  try {
    cfg = json::parse(text);
  } catch (const json::parse_error& e) {
    DS_THROW(FormatError, "{}: invalid JSON at byte {}", source, e.byte);
  } catch (const json::exception& e) {   // e.g. a number beyond a double's range
    DS_THROW(FormatError, "{}: invalid JSON: {}", source, e.what());
  }
  if (!cfg.is_object()) DS_THROW(FormatError, "{}: top level is not an object", source);
  ChatTemplate t;
  t.bos_ = token_field(cfg, "bos_token", source);
  t.eos_ = token_field(cfg, "eos_token", source);
  auto it = cfg.find("chat_template");
  if (it == cfg.end() || !it->is_string())
    DS_THROW(FormatError, "{}: chat_template missing or not a string", source);
  const std::string& tmpl = it->get<std::string>();
  if (tmpl != tok::ds_chat_template() && !is_deepseek_v3_template(tmpl))
    DS_THROW(FormatError,
             "{}: chat_template: unsupported chat template (XXH64 {:016x}); ds renders only "
             "DeepSeek-V3's published template (or ds-tokenize's plain one) exactly",
             source, xxh64(tmpl));
  if (tmpl == tok::ds_chat_template()) t.plain_source_ = source;
  return t;
}

void ChatTemplate::check_tokens(const tok::Tokenizer& tok, const std::string& source) const {
  for (const auto& [field, text] : {std::pair{"bos_token", &bos_}, {"eos_token", &eos_}}) {
    const auto ids = tok.encode(*text);   // added tokens matched, as in rendered chats
    if (ids.size() != 1)
      DS_THROW(FormatError, "{}: {} '{}' is not one token of the tokenizer", source, field,
               *text);
    // and it is the tokenizer's own: samples must start with BOS, generation stops at EOS
    const bool is_bos = std::string_view(field) == "bos_token";
    const auto own = is_bos ? tok.bos_id() : tok.eos_id();
    if (own && ids[0] != *own)
      DS_THROW(FormatError, "{}: {} '{}' is not the tokenizer's {} token '{}'", source, field,
               *text, is_bos ? "BOS" : "EOS", tok.id_to_token(*own));
  }
}

RenderedChat ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                  bool add_generation_prompt) const {
  RenderedChat r;
  r.text = bos_;
  bool first_system = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "system") continue;
    if (!first_system) r.text += "\n\n";
    r.text += need_content(messages[i], i);
    first_system = false;
  }
  // DeepSeek-V3's template renders the calls of an assistant turn whose content is null and
  // drops them anywhere else: refused, so that no call is lost from a prompt or a sample
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.tool_calls.empty()) continue;
    DS_CHECK_AS(FormatError, m.role == "assistant",
                "messages[{}]: tool_calls on a {} turn (only assistant turns call tools)", i,
                m.role);
    DS_CHECK_AS(FormatError, !m.content,
                "messages[{}]: an assistant turn with both content and tool_calls (DeepSeek-V3's "
                "template renders the calls only when content is null)", i);
  }
  if (!plain_source_.empty())
    for (size_t i = 0; i < messages.size(); ++i)
      if (messages[i].role == "tool" || !messages[i].tool_calls.empty())
        DS_THROW(FormatError, "messages[{}]: {} under the chat template of {} (ds-tokenize's, "
                 "for plain conversations): give a tokenizer_config.json with DeepSeek-V3's own "
                 "template for tools", i, messages[i].role == "tool" ? "a tool turn" : "tool_calls",
                 plain_source_);
  State ns;
  for (size_t i = 0; i < messages.size(); ++i) {
    MessageSpan s;
    s.message = i;
    s.all = {r.text.size(), r.text.size()};
    if (messages[i].role != "system") {
      s.target = render_one(messages[i], i, ns, r.text);
      s.all.end = r.text.size();
    }
    r.spans.push_back(s);
  }
  if (ns.is_tool) r.text += kToolOutputsEnd;
  if (add_generation_prompt && !ns.is_tool) r.text += sp::kAssistant;
  return r;
}

std::vector<ChatMessage> parse_messages(std::string_view text, const std::string& source) {
  io::check_json_input(text, source);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    DS_THROW(FormatError, "{}: invalid JSON at byte {}", source, e.byte);
  } catch (const json::exception& e) {   // e.g. a number beyond a double's range
    DS_THROW(FormatError, "{}: invalid JSON: {}", source, e.what());
  }
  if (j.is_object() && j.contains("messages")) j = j["messages"];
  if (!j.is_array()) DS_THROW(FormatError, "{}: messages must be an array", source);
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const json& m = j[i];
    auto str = [&](const json& v, const std::string& field) {
      if (!v.is_string())
        DS_THROW(FormatError, "{}: messages[{}].{} must be a string", source, i, field);
      return v.get<std::string>();
    };
    if (!m.is_object() || !m.contains("role"))
      DS_THROW(FormatError, "{}: messages[{}].role missing", source, i);
    ChatMessage msg;
    msg.role = str(m["role"], "role");
    if (m.contains("content") && !m["content"].is_null())
      msg.content = str(m["content"], "content");
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      const json& calls = m["tool_calls"];
      if (!calls.is_array())
        DS_THROW(FormatError, "{}: messages[{}].tool_calls must be an array", source, i);
      for (size_t c = 0; c < calls.size(); ++c) {
        const std::string f = fmt::format("tool_calls[{}]", c);
        const json& call = calls[c];
        if (!call.is_object() || !call.contains("function") || !call["function"].is_object())
          DS_THROW(FormatError, "{}: messages[{}].{}.function missing", source, i, f);
        ToolCall t;
        if (call.contains("type")) t.type = str(call["type"], f + ".type");
        const json& fn = call["function"];
        t.name = str(fn.value("name", json()), f + ".function.name");
        // a JSON string (OpenAI), or an object or array written out compactly
        if (!fn.contains("arguments") || fn["arguments"].is_null())
          DS_THROW(FormatError, "{}: messages[{}].{}.function.arguments missing", source, i, f);
        const json& args = fn["arguments"];
        t.arguments = args.is_string() ? args.get<std::string>() : args.dump();
        msg.tool_calls.push_back(std::move(t));
      }
    }
    out.push_back(std::move(msg));
  }
  return out;
}

}  // namespace ds::infer
