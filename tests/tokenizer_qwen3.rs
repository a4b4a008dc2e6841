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
