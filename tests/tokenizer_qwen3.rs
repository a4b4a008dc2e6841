//! The real Qwen3 tokenizer (tests/data/qwen3-tokenizer, see SOURCE.md there): ids of known strings and the
//! chat template rendered exactly as LATENTMAS.md states.

use std::path::Path;

use latentmas::tokenizer::Tokenizer;

fn qwen3() -> Tokenizer {
    Tokenizer::load(Path::new("tests/data/qwen3-tokenizer")).expect("load the committed Qwen3 tokenizer")
}

#[test]
fn encodes_known_strings() {
    let t = qwen3();
    assert_eq!(
        t.encode("<|im_start|>user\nWhat is 2+2?<|im_end|>").unwrap(),
        [151644, 872, 198, 3838, 374, 220, 17, 10, 17, 30, 151645]
    );
    assert_eq!(t.encode("<think>").unwrap(), [151667]);
    assert_eq!(t.encode("</think>").unwrap(), [151668]);
    assert_eq!(t.encode("<|endoftext|>").unwrap(), [151643]);
    assert_eq!(t.len(), 151669);
    assert_eq!(t.stop_ids(), [151645, 151643]);
}

#[test]
fn decode_skips_special_tokens_but_keeps_think() {
    let t = qwen3();
    let ids = t.encode("<think>\nok</think>\n\nHello<|im_end|>").unwrap();
    assert_eq!(t.decode(&ids, true).unwrap(), "<think>\nok</think>\n\nHello");
    assert!(t.decode(&ids, false).unwrap().ends_with("<|im_end|>"));
}

#[test]
fn chat_template_renders_system_user_and_generation_prompt() {
    let t = qwen3();
    let text = t.render_chat(Some("SYS"), "USER", None).unwrap();
    assert_eq!(text, "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nUSER<|im_end|>\n<|im_start|>assistant\n");
    let off = t.render_chat(Some("SYS"), "USER", Some(false)).unwrap();
    assert_eq!(off, format!("{text}<think>\n\n</think>\n\n"));
    assert_eq!(
        t.render_chat(None, "hi", Some(true)).unwrap(),
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn missing_files_are_named() {
    let dir = std::env::temp_dir().join(format!("lm-tok-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = Tokenizer::load(&dir).err().expect("must fail").to_string();
    assert!(err.contains("tokenizer.json") && err.contains("missing"), "{err}");
    std::fs::copy("tests/data/qwen3-tokenizer/tokenizer.json", dir.join("tokenizer.json")).unwrap();
    let err = Tokenizer::load(&dir).err().expect("must fail").to_string();
    assert!(err.contains("tokenizer_config.json"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The typed `tokenizer.json` reader builds the same tokenizer as `tokenizers::Tokenizer::from_file`: the
/// same serialisation (vocabulary, merges in rank order, added tokens, normalizer, pre-tokenizer, decoder)
/// and the same ids for text mixing specials, multilingual text and byte-level fallbacks.
#[test]
fn typed_reader_builds_the_librarys_tokenizer() {
    for dir in ["tests/data/qwen3-tokenizer", "tests/data/tiny-tied", "tests/data/tiny-trained"] {
        let path = Path::new(dir).join("tokenizer.json");
        let ours = latentmas::tokenizer_json::load_tokenizer_json(&path).unwrap();
        let theirs = tokenizers::Tokenizer::from_file(&path).unwrap();
        let (a, b) = (serde_json::to_value(&ours).unwrap(), serde_json::to_value(&theirs).unwrap());
        assert!(a == b, "{dir}: the two tokenizers serialise differently");
        for text in ["<|im_start|>user\nWhat is 2+2?<|im_end|>", "naïve 東京 🙂 \t\r\n  x", "<think>\n\n</think>"]
        {
            let (x, y) = (ours.encode(text, false).unwrap(), theirs.encode(text, false).unwrap());
            assert_eq!(x.get_ids(), y.get_ids(), "{dir}: {text:?}");
        }
    }
}

#[test]
fn a_malformed_tokenizer_json_fails_with_the_librarys_error() {
    let dir = std::env::temp_dir().join(format!("latentmas-tokjson-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    let good = std::fs::read_to_string("tests/data/qwen3-tokenizer/tokenizer.json").unwrap();
    // a merge naming a token that is not in the vocabulary
    let bad = good.replacen("[\n        \"Ġ\",\n        \"Ġ\"\n      ]", "[\"Ġ\", \"no-such-token\"]", 1);
    assert_ne!(bad, good, "the edit applies");
    std::fs::write(&path, &bad).unwrap();
    let ours = latentmas::tokenizer_json::load_tokenizer_json(&path).unwrap_err().to_string();
    let theirs = tokenizers::Tokenizer::from_file(&path).unwrap_err().to_string();
    assert_eq!(ours, theirs);
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    assert!(latentmas::tokenizer_json::load_tokenizer_json(&path).is_err());
    std::fs::remove_dir_all(&dir).ok();
}
