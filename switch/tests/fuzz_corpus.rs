//! Replays the fuzz targets' seed inputs and committed corpora (`switch/fuzz/corpus/TARGET/`)
//! through the same harnesses (`switch::fuzzing`), so every input a fuzzer once found
//! interesting is checked on every test run, on stable Rust, without libFuzzer.

use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn seeds_and_corpora_run_clean() {
    let mut total = 0;
    for target in switch::fuzzing::TARGETS {
        let seeds = switch::fuzzing::seed_inputs(target);
        assert!(!seeds.is_empty(), "{target} has seed inputs");
        for s in &seeds {
            assert!(switch::fuzzing::run(target, s));
        }
        let dir = corpus_dir(target);
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
        let mut n = 0;
        for e in entries {
            let path = e.unwrap().path();
            let data = match std::fs::read(&path) {
                Ok(d) => d,
                // A fuzzer running beside the tests replaces inputs with smaller ones.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{}: {e}", path.display()),
            };
            assert!(switch::fuzzing::run(target, &data), "{}", path.display());
            n += 1;
        }
        assert!(n > 0, "the corpus of {target} is committed");
        total += n;
    }
    eprintln!("replayed {total} corpus inputs");
}

/// Writes the seed inputs into the corpus folders (`bench/fuzz.sh` runs this before fuzzing).
#[test]
#[ignore = "writes files; run by bench/fuzz.sh"]
fn write_seeds() {
    for target in switch::fuzzing::TARGETS {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (k, s) in switch::fuzzing::seed_inputs(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{k:02}")), s).unwrap();
        }
    }
}
