//! What tokens cost: the built-in list prices of common hosted models
//! (`prices.tsv`, dated and sourced at its top), each Backend's `pricing`
//! overrides, and the integer arithmetic that turns usage into micro-dollars.
//! Knows nothing of budgets, counters or requests.
//!
//! How a (backend, model) pair finds its price, first match wins:
//! 1. the Backend's `pricing` key equal to the model name as sent;
//! 2. the Backend's `pricing` keys with `*` / `?` globs
//!    ([`ModelPattern`]) that match it, the most specific first (the most
//!    literal characters; ties in key order);
//! 3. the Backend's exact keys for the model's resolved names: without a
//!    `vendor/` prefix (`openai/gpt-4o`, `models/gemini-2.5-pro`) and without
//!    a dated suffix (`-2024-08-06`, `-20250929`, `@20250929`, `-0613`,
//!    `-001`), so a price for `gpt-4o` also prices `gpt-4o-2024-08-06`;
//! 4. the built-in row for the name or a resolved name (case-insensitive),
//!    unless the backend is self-hosted (Ollama, vLLM, LM Studio), where
//!    list prices mean nothing. Rows of a host of open models (Fireworks,
//!    SambaNova, ... : [`HOSTS`]) price only that host's backends, and come
//!    before the model maker's row there: the same open model costs
//!    differently on each host.
//!
//! `None` means no price is known: the caller decides what an unpriced
//! request costs (a `"*"` key in `pricing` gives every model a price).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::OnceLock;

use sluice_crds::pattern::ModelPattern;
use sluice_crds::snapshot::{Backend, Price, Provider};
use sluice_crds::values::MicroUsd;

/// The built-in price list, USD per million tokens.
const PRICES_TSV: &str = include_str!("prices.tsv");

/// Prices of every backend of one snapshot, built once per config.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    backends: Vec<BackendPrices>,
}

#[derive(Debug, Clone)]
struct BackendPrices {
    exact: HashMap<String, Price>,
    /// Most specific first.
    globs: Vec<(ModelPattern, Price)>,
    /// Whether the built-in list prices apply (not for self-hosted models).
    list_prices: bool,
    /// The host whose own rows apply (see [`HOSTS`]).
    host: Option<&'static str>,
}

impl PriceTable {
    /// Builds the table from a snapshot's backends (`&snapshot.backends`),
    /// in the same order, so backend indexes carry over.
    pub fn new(backends: &[Backend]) -> Self {
        let backends = backends
            .iter()
            .map(|backend| {
                let mut exact = HashMap::new();
                let mut globs = Vec::new();
                for (key, price) in &backend.pricing {
                    match ModelPattern::parse(key) {
                        Ok(ModelPattern::Exact(name)) => {
                            exact.insert(name, *price);
                        }
                        Ok(glob @ ModelPattern::Glob(_)) => globs.push((glob, *price)),
                        // Empty keys are refused by validation; nothing to match.
                        Err(_) => {}
                    }
                }
                // Stable sort: equally specific globs stay in key order.
                globs.sort_by_key(|(glob, _)| std::cmp::Reverse(literal_chars(glob.as_str())));
                BackendPrices {
                    exact,
                    globs,
                    list_prices: uses_list_prices(backend.provider),
                    host: host_of(backend.provider),
                }
            })
            .collect();
        Self { backends }
    }

    /// The price of `model` on the backend at index `backend` of the
    /// snapshot (see the module docs for the order of lookups). An index
    /// out of range gets the built-in list price. No allocation.
    pub fn price(&self, backend: usize, model: &str) -> Option<Price> {
        let Some(prices) = self.backends.get(backend) else {
            return builtin_price(model);
        };
        if let Some(price) = prices.exact.get(model) {
            return Some(*price);
        }
        if let Some((_, price)) = prices.globs.iter().find(|(glob, _)| glob.matches(model)) {
            return Some(*price);
        }
        if !prices.exact.is_empty() {
            if let Some(price) = resolved_names(model)
                .skip(1)
                .find_map(|name| prices.exact.get(name))
            {
                return Some(*price);
            }
        }
        if prices.list_prices {
            builtin_price_on(prices.host, model)
        } else {
            None
        }
    }
}

/// The built-in list price of `model` (case-insensitive), resolving a
/// `vendor/` prefix and dated snapshots: `gpt-4o-2024-08-06` is `gpt-4o`,
/// `claude-sonnet-4-5-20250929` is `claude-sonnet-4-5`. A dated id whose
/// price differs (`gpt-4o-2024-05-13`) has its own row and wins.
pub fn builtin_price(model: &str) -> Option<Price> {
    builtin_price_on(None, model)
}

/// [`builtin_price`] on a backend of `host` (see [`HOSTS`]): the host's
/// own row for a name first, then the maker's; other hosts' rows never.
pub fn builtin_price_on(host: Option<&str>, model: &str) -> Option<Price> {
    let table = builtin();
    resolved_names(model).find_map(|name| {
        let start = table.partition_point(|row| cmp_ignore_case(row.name, name) == Ordering::Less);
        let same = table[start..]
            .iter()
            .take_while(|row| cmp_ignore_case(row.name, name) == Ordering::Equal);
        let mut maker = None;
        for row in same {
            match row.host {
                Some(h) if Some(h) == host => return Some(row.price),
                Some(_) => {}
                None => maker = Some(row.price),
            }
        }
        maker
    })
}

/// Hosts of open models whose rows (the `provider` column) price only
/// their own backends.
pub const HOSTS: [(&str, Provider); 5] = [
    ("fireworks", Provider::Fireworks),
    ("sambanova", Provider::SambaNova),
    ("together", Provider::Together),
    ("deepinfra", Provider::DeepInfra),
    ("cerebras", Provider::Cerebras),
];

/// The host name of `provider`'s rows, if it is one of [`HOSTS`].
fn host_of(provider: Provider) -> Option<&'static str> {
    HOSTS
        .iter()
        .find(|(_, p)| *p == provider)
        .map(|(name, _)| *name)
}

/// One built-in row.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row<'a> {
    name: &'a str,
    /// Set for a host's own rows (see [`HOSTS`]).
    host: Option<&'a str>,
    price: Price,
}

/// What `input` tokens (of which `cached_input` were cache hits, as OpenAI
/// reports `prompt_tokens_details.cached_tokens`) and `output` tokens cost,
/// in micro-dollars, rounded up. Cached tokens are charged at the cached
/// rate instead of the input rate; more cached than input tokens counts as
/// all input cached. Exact integer arithmetic; saturates at `u64::MAX`.
pub fn cost_micro_usd(price: &Price, input: u64, output: u64, cached_input: u64) -> u64 {
    let cached = cached_input.min(input);
    let fresh = input - cached;
    // Each product is below 2^128; the sum saturates instead of wrapping.
    let total = u128::from(fresh)
        .saturating_mul(u128::from(price.input.0))
        .saturating_add(u128::from(cached) * u128::from(price.cached_input.0))
        .saturating_add(u128::from(output) * u128::from(price.output.0));
    u64::try_from(total.div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Self-hosted backends have no list price; hosted and aggregating ones
/// (OpenAI-compatible, OpenRouter, Together, ...) get the model maker's.
fn uses_list_prices(provider: Provider) -> bool {
    !matches!(
        provider,
        Provider::Ollama | Provider::VLLM | Provider::LMStudio | Provider::Mcp
    )
}

/// Characters of a glob that are not wildcards.
fn literal_chars(glob: &str) -> usize {
    glob.chars().filter(|c| !matches!(c, '*' | '?')).count()
}

/// `model`, then its name without a `vendor/` prefix or a Bedrock model
/// id's dressing, then each of those without its dated suffixes, one at a
/// time.
fn resolved_names(model: &str) -> impl Iterator<Item = &str> {
    let bare = model.rsplit_once('/').map(|(_, bare)| bare);
    std::iter::once(model)
        .chain(bare)
        .chain(bedrock_bare(model))
        .flat_map(|name| std::iter::successors(Some(name), |name| undated(name)).take(3))
}

/// A Bedrock model id as its maker names the model:
/// `us.anthropic.claude-3-5-sonnet-20240620-v1:0` is
/// `claude-3-5-sonnet-20240620` (a cross-region prefix, the maker, and the
/// `-vN[:M]` version go).
fn bedrock_bare(model: &str) -> Option<&str> {
    let mut rest = model;
    for region in ["us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au."] {
        if let Some(stripped) = rest.strip_prefix(region) {
            rest = stripped;
            break;
        }
    }
    let (maker, name) = rest.split_once('.')?;
    if maker.is_empty() || !maker.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let name = match name.rsplit_once("-v") {
        Some((base, version))
            if !base.is_empty()
                && version
                    .split(':')
                    .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())) =>
        {
            base
        }
        _ => name,
    };
    Some(name)
}

/// `name` without one trailing date or version: `@anything` (Vertex AI),
/// `-YYYY-MM-DD`, or a last `-` segment of 8, 4 or 3 digits (`-20250929`,
/// `-0613`, `-2411`, `-001`).
fn undated(name: &str) -> Option<&str> {
    if let Some((base, _)) = name.rsplit_once('@') {
        return Some(base).filter(|b| !b.is_empty());
    }
    if let Some(at) = name.len().checked_sub(11).filter(|at| *at > 0) {
        // A date is ASCII, so `at` is a char boundary whenever it matches.
        let d = &name.as_bytes()[at..];
        let digits = |range: std::ops::Range<usize>| d[range].iter().all(u8::is_ascii_digit);
        let date = d[0] == b'-' && d[5] == b'-' && d[8] == b'-';
        if date && digits(1..5) && digits(6..8) && digits(9..11) {
            return name.get(..at);
        }
    }
    let (base, last) = name.rsplit_once('-')?;
    let dated = matches!(last.len(), 3 | 4 | 8) && last.bytes().all(|b| b.is_ascii_digit());
    (dated && !base.is_empty()).then_some(base)
}

fn cmp_ignore_case(a: &str, b: &str) -> Ordering {
    a.bytes()
        .map(|c| c.to_ascii_lowercase())
        .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

/// The parsed built-in list, sorted by name, parsed on first use.
fn builtin() -> &'static [Row<'static>] {
    static TABLE: OnceLock<Vec<Row<'static>>> = OnceLock::new();
    TABLE.get_or_init(|| parse_table(PRICES_TSV).0)
}

/// Rows of a price list (sorted by name) and the lines it could not read.
/// A bad line is skipped rather than losing the whole list; a test keeps
/// the checked-in list free of them.
fn parse_table(text: &str) -> (Vec<Row<'_>>, Vec<String>) {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_row(line) {
            Ok((names, host, price)) => {
                rows.extend(names.into_iter().map(|name| Row { name, host, price }));
            }
            Err(e) => errors.push(format!("line {}: {e}", number + 1)),
        }
    }
    rows.sort_by(|a, b| cmp_ignore_case(a.name, b.name));
    (rows, errors)
}

/// A line's names, host (for a host's own rows) and price.
fn parse_row(line: &str) -> Result<(Vec<&str>, Option<&str>, Price), String> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [names, input, output, cached, provider] = fields[..] else {
        return Err(format!(
            "expected 5 tab-separated fields, got {}",
            fields.len()
        ));
    };
    let input = MicroUsd::parse(input)?;
    let output = MicroUsd::parse(output)?;
    let cached_input = match cached {
        "-" => input,
        text => MicroUsd::parse(text)?,
    };
    let names = names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    let host = HOSTS
        .iter()
        .find(|(name, _)| *name == provider)
        .map(|(name, _)| *name);
    Ok((
        names,
        host,
        Price {
            input,
            output,
            cached_input,
        },
    ))
}

#[cfg(test)]
#[path = "pricing_tests.rs"]
mod tests;
