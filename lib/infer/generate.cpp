// run_generate (see generate.hpp): checkpoint loading, prompt rendering/tokenisation, the three
// I/O modes (--prompt streaming, --jsonl batches, interactive chat) around infer::generate.
// reference: DeepSeek-V3 generate.py (spec §2.4-2.5); OpenAI-style finish_reason.
#include "ds/infer/generate.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <spdlog/spdlog.h>
#include <thread>

#include "ds/core/error.hpp"
#include "ds/core/thread_pool.hpp"
#include "ds/infer/generator.hpp"
#include "ds/infer/hf_generation_config.hpp"
#include "ds/io/file.hpp"
#include "ds/io/json_input.hpp"
#include "ds/model/config.hpp"
#include "ds/model/pretrained.hpp"
#include "ds/tokenizer/utf8.hpp"

namespace ds::infer {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// The options after generation_config.json's defaults (with_file_defaults).
struct Effective {
  GenerateOptions o;
  std::string max_new_name = "--max-new-tokens";   // where o.max_new_tokens came from
  std::vector<tok::TokenId> extra_stop_ids;        // the file's eos_token_id
};

struct Session {
  const GenerateOptions& o;           // Effective::o
  const Effective& eff;
  model::Pretrained pre;
  std::optional<TokenText> text;
  GenerationConfig cfg;
  GenerationStats stats;
  std::unique_ptr<Engine> engine;
};

void validate_options(const GenerateOptions& o) {
  DS_CHECK_AS(UsageError, !o.model.empty(), "--model is required");
  DS_CHECK_AS(UsageError, o.device == "cpu" || o.device == "cuda",
              "--device must be cpu or cuda (got '{}')", o.device);
  DS_CHECK_AS(UsageError, o.kv_cache == "f32" || o.kv_cache == "bf16",
              "--kv-cache must be f32 or bf16 (got '{}')", o.kv_cache);
  DS_CHECK_AS(UsageError, o.speculative == "none" || o.speculative == "mtp",
              "--speculative must be none or mtp (got '{}')", o.speculative);
  DS_CHECK_AS(UsageError, !o.generation_config.empty(),
              "--generation-config must be auto, none or a file");
  DS_CHECK_AS(UsageError, o.max_new_tokens >= 1, "--max-new-tokens must be >= 1 (got {})",
              o.max_new_tokens);
  DS_CHECK_AS(UsageError, o.batch_size >= 1, "--batch-size must be >= 1 (got {})", o.batch_size);
  DS_CHECK_AS(UsageError, o.prefill_chunk >= 1, "--prefill-chunk must be >= 1 (got {})",
              o.prefill_chunk);
  check_threads(o.threads);
  DS_CHECK_AS(UsageError, !(o.has_prompt && o.jsonl), "--prompt and --jsonl are exclusive");
  DS_CHECK_AS(UsageError, !o.has_prompt || !o.prompt.empty(), "--prompt: empty prompt");
  if (const auto bad = tok::first_invalid_utf8(o.prompt); o.has_prompt && bad)
    DS_THROW(UsageError, "--prompt: not valid UTF-8 (byte {})", *bad);
  for (const std::string& s : o.stop) DS_CHECK_AS(UsageError, !s.empty(), "--stop: empty string");
  validate(SamplingOptions{o.temperature, o.top_k, o.top_p, o.seed});   // before the load
}

// IoError when stdout no longer takes output (a closed pipe with SIGPIPE ignored, a full
// disk): generation stops at once rather than computing what nobody can read. errno is
// cleared before the writes it judges.
void check_stdout() {
  const int err = errno;
  if (std::ferror(stdout) || !std::cout.good())
    DS_THROW(IoError, "stdout: write failed{}",
             err ? ": " + std::string(std::strerror(err)) : std::string());
}

void write_stdout(std::string_view t) {
  errno = 0;
  std::fwrite(t.data(), 1, t.size(), stdout);
  std::fflush(stdout);
  check_stdout();
}

void open_session(Session& s) {
  const GenerateOptions& o = s.o;
  const Device dev = o.device == "cuda" ? Device::cuda : Device::cpu;
  s.pre = model::load_pretrained(o.model, {/*load_mtp=*/o.speculative == "mtp", true, dev});
  DS_CHECK_AS(UsageError, o.speculative != "mtp" || s.pre.args.n_mtp_layers > 0,
              "speculative decoding needs an MTP module: {} has none (num_nextn_predict_layers "
              "is 0, or the weights lack its layer)", s.pre.dir.string());
  s.text.emplace(*s.pre.tokenizer);
  s.cfg.sampling = {o.temperature, o.top_k, o.top_p, o.seed};
  validate(s.cfg.sampling);
  s.cfg.stop.max_new_tokens = size_t(o.max_new_tokens);
  s.cfg.stop.stop_strings = o.stop;
  const auto eos = s.pre.tokenizer->eos_id();
  s.cfg.stop.stop_ids = {eos ? *eos : tok::TokenId(s.pre.args.eos_token_id)};
  for (tok::TokenId id : s.eff.extra_stop_ids)
    if (std::find(s.cfg.stop.stop_ids.begin(), s.cfg.stop.stop_ids.end(), id) ==
        s.cfg.stop.stop_ids.end())
      s.cfg.stop.stop_ids.push_back(id);
  s.cfg.speculative = o.speculative == "mtp";
  s.cfg.prefill_chunk = o.prefill_chunk;
}

// "" when a prompt of n tokens and --max-new-tokens fit the model's context, else why not.
std::string overflow(const Session& s, int64_t n) {
  if (s.o.max_new_tokens <= s.pre.args.max_seq_len - n) return {};   // (no overflow)
  return fmt::format("prompt of {} tokens + {} {} exceeds the model's max_seq_len {}", n,
                     s.eff.max_new_name, s.o.max_new_tokens, s.pre.args.max_seq_len);
}

// (Re)creates the engine when the needed capacity grows (prompt + new tokens + a verify pair).
Engine& engine_for(Session& s, int64_t max_prompt, int slots) {
  const int64_t need = max_prompt + s.o.max_new_tokens + 2;
  if (const std::string why = overflow(s, max_prompt); !why.empty())
    DS_THROW(UsageError, "{}", why);
  if (!s.engine || s.engine->capacity() < need || s.engine->slots() < slots) {
    ops::Context ctx;
    ctx.device = s.pre.store->device();
    ctx.threads =
        s.o.threads > 0 ? s.o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
    ops::set_cpu_threads(ctx.threads);
    const int64_t cap = std::min(s.pre.args.max_seq_len + 2, std::max<int64_t>(need, 256));
    s.engine.reset();
    EngineOptions eo;
    eo.slots = slots;
    eo.capacity = cap;
    eo.kv_cache = s.o.kv_cache == "bf16" ? DType::bf16 : DType::f32;
    try {
      s.engine = std::make_unique<Engine>(s.pre.args, *s.pre.store, ctx, eo);
    } catch (const std::bad_alloc&) {
      DS_THROW(UsageError, "out of memory for the KV cache of {} sequence{} x {} positions "
               "(prompt + {} {}): lower --max-new-tokens{}", slots,
               slots == 1 ? "" : "s", cap, s.eff.max_new_name, s.o.max_new_tokens,
               slots > 1 ? " or --batch-size" : "");
    }
  }
  return *s.engine;
}

// BOS + the text's tokens (the text is not empty: refused earlier); BOS only when the
// checkpoint's tokenizer_config.json says add_bos_token (or has none).
std::vector<int32_t> tokenize_raw(const Session& s, const std::string& text) {
  const tok::Tokenizer& tk = *s.pre.tokenizer;
  std::vector<int32_t> ids;
  if (s.pre.add_bos_token)
    if (auto bos = tk.bos_id()) ids.push_back(int32_t(*bos));
  for (tok::TokenId t : tk.encode(text, /*match_added_tokens=*/false)) ids.push_back(int32_t(t));
  return ids;
}

std::vector<int32_t> tokenize_chat(const Session& s, const std::vector<ChatMessage>& msgs) {
  DS_CHECK_AS(FormatError, s.pre.chat_template.has_value(),
              "{}: no usable DeepSeek-V3 chat template ({})", s.pre.dir.string(),
              s.pre.chat_template_error);
  const RenderedChat r = s.pre.chat_template->render(msgs, /*add_generation_prompt=*/true);
  std::vector<int32_t> ids;   // the rendered text starts with the BOS text
  for (tok::TokenId t : s.pre.tokenizer->encode(r.text, true)) ids.push_back(int32_t(t));
  return ids;
}

std::vector<int32_t> tokenize_prompt(const Session& s, const std::string& text) {
  return s.o.chat ? tokenize_chat(s, {{"user", text, {}}}) : tokenize_raw(s, text);
}

// Prompt i of the batch samples from the stream of request first + i (seed, request, step), so
// a request's sampled text does not depend on --batch-size or on its place in a batch.
std::vector<Completion> run_batch(Session& s, const std::vector<std::vector<int32_t>>& prompts,
                                  const StreamFn& on_text, uint64_t first = 0) {
  int64_t longest = 0;
  for (const auto& p : prompts) longest = std::max<int64_t>(longest, int64_t(p.size()));
  Engine& eng = engine_for(s, longest, int(prompts.size()));   // the first batch is the largest
  s.cfg.first_seq = first;
  return generate(eng, prompts, s.cfg, &*s.text, &s.stats, on_text);
}

void mode_prompt(Session& s) {
  const auto ids = tokenize_prompt(s, s.o.prompt);
  run_batch(s, {ids}, [](size_t, std::string_view t) { write_stdout(t); });
  write_stdout("\n");
}

// One JSONL request: {"prompt": str} or {"messages": [...]}, nothing else.
std::vector<int32_t> parse_request(const Session& s, const std::string& line, size_t lineno) {
  const std::string src = fmt::format("<stdin>:{}", lineno);
  io::check_json_input(line, src);
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {
    DS_THROW(FormatError, "{}: invalid JSON ({})", src, e.what());
  }
  DS_CHECK_AS(FormatError, j.is_object(), "{}: expected a JSON object", src);
  for (auto it = j.begin(); it != j.end(); ++it)
    DS_CHECK_AS(FormatError, it.key() == "prompt" || it.key() == "messages",
                "{}: unknown field '{}' (expected 'prompt' or 'messages')", src, it.key());
  DS_CHECK_AS(FormatError, j.contains("prompt") != j.contains("messages"),
              "{}: give exactly one of 'prompt' and 'messages'", src);
  std::vector<int32_t> ids;
  if (j.contains("prompt")) {
    DS_CHECK_AS(FormatError, j["prompt"].is_string(), "{}: field 'prompt' must be a string", src);
    const std::string p = j["prompt"].get<std::string>();
    DS_CHECK_AS(FormatError, !p.empty(), "{}: field 'prompt' is empty", src);
    ids = tokenize_prompt(s, p);
  } else {
    const auto msgs = parse_messages(j["messages"].dump(), src);
    DS_CHECK_AS(FormatError, !msgs.empty(), "{}: field 'messages' is empty", src);
    try {
      ids = tokenize_chat(s, msgs);
    } catch (const FormatError& e) {   // the template's own checks (roles, contents)
      DS_THROW(FormatError, "{}: {}", src, e.what());
    }
    // the reply is generated after the last message, which must be one to reply to
    DS_CHECK_AS(FormatError, msgs.back().role == "user" || msgs.back().role == "tool",
                "{}: messages[{}]: a request ends with a user or tool message, not {}", src,
                msgs.size() - 1, msgs.back().role);
  }
  if (const std::string why = overflow(s, int64_t(ids.size())); !why.empty())
    DS_THROW(FormatError, "{}: {}", src, why);
  return ids;
}

// Every request is read and checked before the first is generated: a malformed line stops the
// run with nothing on stdout, whatever --batch-size.
void mode_jsonl(Session& s) {
  std::vector<std::vector<int32_t>> requests;
  std::string line;
  for (size_t lineno = 1; std::getline(std::cin, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    requests.push_back(parse_request(s, line, lineno));
  }
  if (std::ferror(stdin))   // (a read error ends getline like the end of the input)
    DS_THROW(IoError, "<stdin>: read failed: {}", std::strerror(errno));
  const size_t B = size_t(s.o.batch_size);
  if (!requests.empty()) {   // the KV cache of the whole run, before any output
    size_t longest = 0;
    for (const auto& r : requests) longest = std::max(longest, r.size());
    engine_for(s, int64_t(longest), int(std::min(B, requests.size())));
  }
  for (size_t first = 0; first < requests.size(); first += B) {
    const std::vector<std::vector<int32_t>> batch(
        requests.begin() + ptrdiff_t(first),
        requests.begin() + ptrdiff_t(std::min(requests.size(), first + B)));
    const std::vector<Completion> done = run_batch(s, batch, {}, first);
    errno = 0;
    for (const Completion& c : done) {
      json out = {{"completion", c.text}, {"tokens", c.tokens.size()},
                  {"finish_reason", std::string(to_string(c.reason))}};
      std::cout << out.dump() << '\n';
    }
    std::cout.flush();
    check_stdout();
  }
}

// A turn that would outgrow the context is refused and the conversation kept (/clear starts
// over). The t-th generated turn samples from stream t.
void mode_interactive(Session& s) {
  s.cfg.reuse_cache = true;   // a turn computes only what follows the cached conversation
  std::vector<ChatMessage> history;
  std::string line;
  for (uint64_t turn = 0;;) {
    write_stdout(">>> ");
    if (!std::getline(std::cin, line)) {
      if (std::ferror(stdin)) DS_THROW(IoError, "<stdin>: read failed: {}", std::strerror(errno));
      break;
    }
    if (line.empty()) continue;
    if (line == "/exit") break;
    if (line == "/clear") {
      history.clear();
      continue;
    }
    if (const auto bad = tok::first_invalid_utf8(line)) {
      std::fprintf(stderr, "not valid UTF-8 (byte %zu): this line is dropped\n", *bad);
      continue;
    }
    history.push_back({"user", line, {}});
    const auto ids = tokenize_chat(s, history);
    if (const std::string why = overflow(s, int64_t(ids.size())); !why.empty()) {
      std::fprintf(stderr, "%s: this turn is dropped; /clear starts a new conversation\n",
                   why.c_str());   // shown whatever --log-level
      history.pop_back();
      continue;
    }
    const auto out =
        run_batch(s, {ids}, [](size_t, std::string_view t) { write_stdout(t); }, turn++);
    write_stdout("\n");
    history.push_back({"assistant", out[0].text, {}});
  }
}

// `o` with the defaults of the checkpoint's generation_config.json (or --generation-config
// FILE) where no flag was given; read before the weights, so a bad file costs no load.
Effective with_file_defaults(const GenerateOptions& o, const fs::path& ckpt) {
  Effective r;
  r.o = o;
  r.o.model = ckpt.string();
  if (o.generation_config == "none") return r;
  const bool automatic = o.generation_config == "auto";
  const fs::path file = automatic ? ckpt / "generation_config.json" : fs::path(o.generation_config);
  std::error_code ec;   // (config.json is read only when there is a file: its vocab_size)
  if (fs::symlink_status(file, ec).type() == fs::file_type::not_found) {
    DS_CHECK_AS(UsageError, automatic, "--generation-config {}: no such file", file.string());
    return r;
  }
  const fs::path config = ckpt / "config.json";
  const int64_t vocab = model::from_hf_json(io::read_file(config), config.string()).vocab_size;
  const std::optional<GenerationDefaults> d = read_generation_config(file, vocab);
  DS_CHECK_AS(IoError, d.has_value(), "{}: vanished while being read", file.string());
  if (!d->not_applied.empty())
    spdlog::warn("{}: ds-generate does not apply {}", d->src, fmt::join(d->not_applied, ", "));
  if (!o.given.temperature) r.o.temperature = d->temperature.value_or(0.0f);   // 0: greedy
  if (!o.given.top_k && d->top_k) r.o.top_k = *d->top_k;
  if (!o.given.top_p && d->top_p) r.o.top_p = *d->top_p;
  DS_CHECK_AS(UsageError,
              o.speculative != "mtp" || o.given.temperature || r.o.temperature == 0 ||
                  r.o.top_k == 1,
              "--speculative mtp decodes greedily but {} asks for sampling (do_sample, "
              "temperature {}): add --temperature 0 or --generation-config none",
              d->src, r.o.temperature);
  if (!o.given.max_new_tokens && d->max_new_tokens) {
    r.o.max_new_tokens = *d->max_new_tokens;
    r.max_new_name = "max_new_tokens (" + d->src + ")";
  }
  if (o.stop.empty()) r.o.stop = d->stop_strings;
  r.extra_stop_ids = d->eos_ids;
  spdlog::info("{}: decoding with temperature {}, top_k {}, top_p {}, {} {}, {} stop string(s), "
               "stop ids +[{}] (given flags override the file; --generation-config none "
               "ignores it)", d->src, r.o.temperature, r.o.top_k, r.o.top_p, r.max_new_name,
               r.o.max_new_tokens, r.o.stop.size(), fmt::join(r.extra_stop_ids, ","));
  return r;
}

}  // namespace

void run_generate(const GenerateOptions& opts) {
  validate_options(opts);
  const bool tty = ::isatty(0) != 0;
  DS_CHECK_AS(UsageError, opts.has_prompt || opts.jsonl || tty,
              "give --prompt TEXT or --jsonl (stdin is not a terminal)");
  // CudaError naming the reason when there is no usable GPU, before any file is read
  ops::init_device(opts.device == "cuda" ? Device::cuda : Device::cpu);
  const Effective eff = with_file_defaults(opts, model::resolve_checkpoint_dir(opts.model));
  const GenerateOptions& o = eff.o;
  Session s{o, eff, {}, {}, {}, {}, {}};
  open_session(s);
  if (o.has_prompt) mode_prompt(s);
  else if (o.jsonl) mode_jsonl(s);
  else mode_interactive(s);
  if (o.stats && s.engine) {
    std::string j = s.stats.json();
    j.pop_back();
    std::fprintf(stderr,
                 "%s,\"kv_cache_bytes_per_token\":%lld,\"naive_kv_bytes_per_token\":%lld}\n",
                 j.c_str(), (long long)s.engine->cache_bytes_per_token(),
                 (long long)s.engine->naive_cache_bytes_per_token());
  }
}

}  // namespace ds::infer
