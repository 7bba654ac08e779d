//! Writes the CustomResourceDefinitions of the four kinds, generated from
//! the `sluice-crds` types, to `charts/sluice/crds/` and `crds/yaml/`, and
//! their reference page to `docs/crd-reference.md`.
//!
//! Usage: `cargo run -p sluice-crds --bin gen-crds [-- --check]`; with
//! `--check` nothing is written and the exit status says whether the
//! checked-in files (the page included) are up to date.

use std::path::Path;
use std::process::ExitCode;

use sluice_crds::crd::{drifted_files, write_files, GENERATE_COMMAND};
use sluice_crds::reference::{reference_drifted, write_reference};

fn main() -> ExitCode {
    // The crate lives in `crds/` of the repository.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let repo = repo.canonicalize().unwrap_or(repo);
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => {
            eprintln!("unknown argument `{other}`; usage: gen-crds [--check]");
            return ExitCode::from(2);
        }
    };
    if check {
        let drifted = drifted_files(&repo).map(|mut drifted| {
            drifted.extend(reference_drifted(&repo));
            drifted
        });
        return match drifted {
            Ok(drifted) if drifted.is_empty() => ExitCode::SUCCESS,
            Ok(drifted) => {
                for path in drifted {
                    eprintln!("out of date: {}", path.display());
                }
                eprintln!("run `{GENERATE_COMMAND}` to update");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match write_files(&repo).and_then(|mut written| {
        written.push(write_reference(&repo)?);
        Ok(written)
    }) {
        Ok(written) => {
            for path in written {
                eprintln!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
