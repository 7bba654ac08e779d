use std::collections::BTreeMap;
use std::time::Duration;

use sluice_crds::snapshot::{BackendName, Target};

use super::*;

fn usd(text: &str) -> MicroUsd {
    MicroUsd::parse(text).unwrap()
}

fn price(input: &str, output: &str, cached: &str) -> Price {
    Price {
        input: usd(input),
        output: usd(output),
        cached_input: usd(cached),
    }
}

fn backend(provider: Provider, pricing: &[(&str, Price)]) -> Backend {
    Backend {
        name: BackendName("b".into()),
        provider,
        target: Target::Demo,
        credential: None,
        models: Vec::new(),
        pricing: pricing
            .iter()
            .map(|(k, p)| ((*k).to_owned(), *p))
            .collect::<BTreeMap<_, _>>(),
        timeout: Duration::from_secs(60),
        headers: Vec::new(),
    }
}

#[test]
fn the_checked_in_list_parses_cleanly() {
    let (rows, errors) = parse_table(PRICES_TSV);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(rows.len() > 60, "{}", rows.len());
    for pair in rows.windows(2) {
        let same = (pair[0].name, pair[0].host) == (pair[1].name, pair[1].host);
        assert!(!same, "{} listed twice", pair[0].name);
    }
    for Row { name, price, .. } in &rows {
        assert_eq!(*name, name.to_ascii_lowercase(), "names are lower case");
        assert!(
            price.cached_input <= price.input,
            "{name}: cached above input"
        );
        // A listed name must not be mistaken for a dated one of another row,
        // unless it is a dated row on purpose (its price differs).
        assert!(!name.contains(char::is_whitespace), "{name}");
    }
    let providers = [
        "openai",
        "anthropic",
        "google",
        "mistral",
        "groq",
        "deepseek",
        "xai",
        "cohere",
    ];
    for provider in providers {
        assert!(
            PRICES_TSV
                .lines()
                .any(|l| l.ends_with(&format!("\t{provider}"))),
            "no {provider} rows"
        );
    }
    assert!(PRICES_TSV.starts_with("# Built-in list prices"));
    assert!(
        PRICES_TSV.contains("2026-11-26"),
        "the list says when it was compiled"
    );
}

#[test]
fn bad_lines_are_reported_and_skipped() {
    let (rows, errors) = parse_table(
        "# comment\n\nok,alias\t1\t2\t-\tx\nbad\t1\t2\tx\nshort\t1\t2\nneg\t-1\t2\t-\tx\n",
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0].price,
        price("1", "2", "1"),
        "`-` means the input price"
    );
}

#[test]
fn list_prices_resolve_dated_and_prefixed_names() {
    let gpt4o = price("2.50", "10", "1.25");
    for name in [
        "gpt-4o",
        "gpt-4o-2024-08-06",
        "gpt-4o-2024-11-20",
        "GPT-4o",
        "openai/gpt-4o",
    ] {
        assert_eq!(builtin_price(name), Some(gpt4o), "{name}");
    }
    // A snapshot with its own price wins over the undated row.
    assert_eq!(
        builtin_price("gpt-4o-2024-05-13"),
        Some(price("5", "15", "5"))
    );
    let sonnet = price("3", "15", "0.30");
    for name in [
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-5@20250929",
        "anthropic/claude-sonnet-4-5",
    ] {
        assert_eq!(builtin_price(name), Some(sonnet), "{name}");
    }
    assert_eq!(
        builtin_price("claude-opus-4-1-20250805"),
        Some(price("15", "75", "1.50"))
    );
    assert_eq!(
        builtin_price("claude-opus-4-5-20251101"),
        Some(price("5", "25", "0.50"))
    );
    assert_eq!(
        builtin_price("claude-opus-4-0"),
        builtin_price("claude-opus-4-20250514")
    );
    assert_eq!(builtin_price("gpt-4-0613"), Some(price("30", "60", "30")));
    assert_eq!(
        builtin_price("gpt-3.5-turbo-0125"),
        Some(price("0.50", "1.50", "0.50"))
    );
    assert_eq!(
        builtin_price("gpt-3.5-turbo-1106"),
        Some(price("1", "2", "1"))
    );
    assert_eq!(
        builtin_price("gemini-2.0-flash-001"),
        builtin_price("gemini-2.0-flash")
    );
    assert_eq!(
        builtin_price("models/gemini-2.5-pro"),
        Some(price("1.25", "10", "0.125"))
    );
    assert_eq!(builtin_price("grok-4-0709"), builtin_price("grok-4"));
    assert_eq!(
        builtin_price("openai/gpt-oss-120b"),
        Some(price("0.15", "0.60", "0.075"))
    );
    assert_eq!(
        builtin_price("command-r7b-12-2024"),
        Some(price("0.0375", "0.15", "0.0375"))
    );
    assert_eq!(builtin_price("sluice-demo"), Some(price("0", "0", "0")));
}

#[test]
fn unknown_and_lookalike_models_have_no_list_price() {
    for name in [
        "",
        "llama3.1",
        "gpt-4o-mini-tts",
        "mistral-large-latest",
        "mistral-large-2407",
        "gemini-2.5-flash-preview-05-20",
        "claude-sonnet-4-5-extra",
        "o3-deep-research-2025-06-26",
        "-2024-08-06",
        "@",
        "/",
        "é-2024-08-06é",
        "gpt-4o-2024-08-0é",
    ] {
        assert_eq!(builtin_price(name), None, "{name:?}");
    }
}

#[test]
fn dated_suffixes() {
    assert_eq!(undated("gpt-4o-2024-08-06"), Some("gpt-4o"));
    assert_eq!(
        undated("claude-3-5-sonnet-20241022"),
        Some("claude-3-5-sonnet")
    );
    assert_eq!(
        undated("claude-3-5-sonnet@20241022"),
        Some("claude-3-5-sonnet")
    );
    assert_eq!(undated("gpt-4-0613"), Some("gpt-4"));
    assert_eq!(undated("gemini-1.5-pro-002"), Some("gemini-1.5-pro"));
    assert_eq!(undated("claude-opus-4-1"), None);
    assert_eq!(undated("o1"), None);
    assert_eq!(undated("llama-3.1-8b-instant"), None);
    assert_eq!(undated("-0613"), None);
    assert_eq!(undated("@x"), None);
}

#[test]
fn backend_pricing_overrides_the_list() {
    let cheap = price("1", "2", "0.5");
    let glob = price("0.10", "0.20", "0.10");
    let everything = price("9", "9", "9");
    let backends = vec![
        backend(Provider::OpenAI, &[]),
        backend(
            Provider::OpenAI,
            &[("gpt-4o", cheap), ("gpt-4o-*", glob), ("*", everything)],
        ),
        backend(Provider::Ollama, &[("llama3.*", cheap)]),
        backend(Provider::OpenRouter, &[]),
    ];
    let table = PriceTable::new(&backends);
    let list = builtin_price("gpt-4o");
    assert!(list.is_some());
    assert_eq!(table.price(0, "gpt-4o"), list);
    assert_eq!(table.price(0, "gpt-4o-2024-08-06"), list);
    assert_eq!(table.price(0, "no-such-model"), None);

    assert_eq!(table.price(1, "gpt-4o"), Some(cheap), "exact first");
    assert_eq!(table.price(1, "gpt-4o-mini"), Some(glob), "specific glob");
    assert_eq!(
        table.price(1, "gpt-4o-2024-08-06"),
        Some(glob),
        "globs see the name as sent"
    );
    assert_eq!(
        table.price(1, "claude-sonnet-4-5"),
        Some(everything),
        "`*` last"
    );

    // Self-hosted: overrides only, never list prices.
    assert_eq!(table.price(2, "llama3.1"), Some(cheap));
    assert_eq!(table.price(2, "gpt-4o"), None);
    // Aggregators get the maker's list price for prefixed names.
    assert_eq!(
        table.price(3, "anthropic/claude-sonnet-4-5"),
        builtin_price("claude-sonnet-4-5")
    );
    // A stale index still gets a list price rather than none.
    assert_eq!(table.price(99, "gpt-4o"), list);
}

#[test]
fn exact_overrides_also_price_dated_names() {
    let mine = price("1", "1", "1");
    let table = PriceTable::new(&[backend(
        Provider::OpenAICompatible,
        &[("claude-sonnet-4-5", mine), ("my-model", mine)],
    )]);
    assert_eq!(table.price(0, "claude-sonnet-4-5-20250929"), Some(mine));
    assert_eq!(table.price(0, "vendor/my-model"), Some(mine));
    assert_eq!(table.price(0, "my-model-2025-01-01"), Some(mine));
    assert_eq!(
        table.price(0, "My-Model"),
        None,
        "override keys are case-sensitive"
    );
}

#[test]
fn equally_specific_globs_keep_key_order() {
    let a = price("1", "1", "1");
    let b = price("2", "2", "2");
    let table = PriceTable::new(&[backend(
        Provider::OpenAI,
        &[("gpt-*-mini", a), ("gpt-4*mini", b), ("*", b)],
    )]);
    // Both globs have 9 literal characters; "gpt-*-mini" sorts first.
    assert_eq!(table.price(0, "gpt-4o-mini"), Some(a));
}

#[test]
fn cost_is_exact_and_rounds_up() {
    let gpt4o = price("2.50", "10", "1.25");
    assert_eq!(cost_micro_usd(&gpt4o, 0, 0, 0), 0);
    // 1M input at $2.50 = 2,500,000 micro-dollars.
    assert_eq!(cost_micro_usd(&gpt4o, 1_000_000, 0, 0), 2_500_000);
    assert_eq!(cost_micro_usd(&gpt4o, 0, 1_000_000, 0), 10_000_000);
    // One token at $2.50/M is 2.5 micro-dollars: rounded up to 3.
    assert_eq!(cost_micro_usd(&gpt4o, 1, 0, 0), 3);
    // 1000 in (400 cached) + 200 out: 600*2.5 + 400*1.25 + 200*10 = 4000.
    assert_eq!(cost_micro_usd(&gpt4o, 1_000, 200, 400), 4_000);
    // Rounding is over the whole sum, not per part: 1*2.5 + 1*1.25 = 3.75 -> 4.
    assert_eq!(cost_micro_usd(&gpt4o, 2, 0, 1), 4);
    // More cached than input: all input is cached.
    assert_eq!(cost_micro_usd(&gpt4o, 100, 0, 500), 125);
    let free = price("0", "0", "0");
    assert_eq!(cost_micro_usd(&free, u64::MAX, u64::MAX, 7), 0);
}

#[test]
fn cost_never_overflows() {
    let dear = Price {
        input: MicroUsd(u64::MAX),
        output: MicroUsd(u64::MAX),
        cached_input: MicroUsd(u64::MAX),
    };
    assert_eq!(cost_micro_usd(&dear, u64::MAX, u64::MAX, 0), u64::MAX);
    assert_eq!(
        cost_micro_usd(&dear, u64::MAX, u64::MAX, u64::MAX),
        u64::MAX
    );
    assert_eq!(cost_micro_usd(&dear, 1, 0, 0), u64::MAX.div_ceil(1_000_000));
    // Large but representable: 10^12 tokens at $1,000/M = $10^9.
    let big = price("1000", "0", "1000");
    assert_eq!(
        cost_micro_usd(&big, 1_000_000_000_000, 0, 0),
        1_000_000_000_000_000
    );
}

#[test]
fn presets_models_have_list_prices() {
    for model in [
        "sonar",
        "sonar-pro",
        "mistral-small-latest",
        "llama-3.3-70b-versatile",
        "deepseek-v4-pro",
        "grok-4",
        "gemini-2.5-flash",
    ] {
        assert!(builtin_price(model).is_some(), "{model}");
    }
    // OpenRouter-style vendor prefixes resolve to the maker's price.
    assert_eq!(
        builtin_price("perplexity/sonar-pro"),
        builtin_price("sonar-pro")
    );
    // A cached token of gpt-4o costs half an input token (1.25 vs 2.50).
    let gpt4o = builtin_price("gpt-4o").unwrap();
    assert_eq!(cost_micro_usd(&gpt4o, 1_000_000, 0, 1_000_000), 1_250_000);
    assert_eq!(cost_micro_usd(&gpt4o, 1_000_000, 0, 400_000), 2_000_000);
}

#[test]
fn bedrock_model_ids_resolve_to_the_makers_price() {
    let sonnet = builtin_price("claude-3-5-sonnet").unwrap();
    for id in [
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "us.anthropic.claude-3-5-sonnet-20240620-v1:0",
        "anthropic.claude-3-5-sonnet-20240620-v1",
    ] {
        assert_eq!(builtin_price(id), Some(sonnet), "{id}");
    }
    assert!(builtin_price("anthropic.").is_none());
    assert!(builtin_price("acme.unknown-model-v1:0").is_none());
}

#[test]
fn a_hosts_rows_price_only_its_own_backends() {
    let table = PriceTable::new(&[
        backend(Provider::Fireworks, &[]),
        backend(Provider::SambaNova, &[]),
        backend(Provider::OpenRouter, &[]),
        backend(Provider::DeepSeek, &[]),
    ]);
    let fireworks = price("0.15", "0.60", "0.015");
    assert_eq!(
        table.price(0, "accounts/fireworks/models/gpt-oss-120b"),
        Some(fireworks)
    );
    // Elsewhere the Fireworks id is not priced by the Fireworks row.
    assert_eq!(
        table.price(2, "accounts/fireworks/models/gpt-oss-120b"),
        None
    );
    // SambaNova's DeepSeek rows price SambaNova only; DeepSeek's own
    // backend keeps the maker's row, and other names fall through to it.
    assert_eq!(
        table.price(1, "DeepSeek-V3.1"),
        Some(price("3", "4.50", "3"))
    );
    assert_eq!(table.price(3, "deepseek-v3.1"), None);
    assert_eq!(table.price(2, "deepseek/deepseek-v3.1"), None);
    assert_eq!(
        table.price(1, "deepseek-v4-pro"),
        builtin_price("deepseek-v4-pro")
    );
    assert_eq!(builtin_price("minimax-m3"), None);
    assert_eq!(
        builtin_price_on(Some("sambanova"), "MiniMax-M3"),
        Some(price("0.60", "2.40", "0.06"))
    );
}
