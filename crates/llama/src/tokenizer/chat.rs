//! Chat templates as plain functions: ChatML (SmolLM2, Qwen, ...) and Llama-2's `[INST]` format.
//! The model's Jinja template is only inspected to pick one of these (and, for SmolLM2, the
//! default system prompt it inserts); it is never executed.
//!
//! Reference: SmolLM2-Instruct's `chat_template` (ChatML with a default system message) and
//! Llama-2-chat's template in transformers (`<s>[INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST]`).
//! Deliberately absent: a Jinja engine, tool calls, and templates we do not recognise (callers
//! get `None` from [`ChatTemplate::detect`] and must choose explicitly).

use crate::{Error, Result};
use std::path::Path;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// The chat formats we can render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>{role}\n{content}<|im_end|>\n` per message; `default_system` is inserted
    /// first when the conversation has no system message (SmolLM2 does this).
    ChatMl { default_system: Option<String> },
    /// Llama-2-chat: `<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s>`.
    Llama2,
}

const SMOLLM_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

impl ChatTemplate {
    /// SmolLM2's template: ChatML with its default system prompt.
    pub fn smollm2() -> Self {
        ChatTemplate::ChatMl { default_system: Some(SMOLLM_SYSTEM.to_string()) }
    }

    /// Recognise a model's Jinja chat template, or `None`.
    pub fn detect(jinja: &str) -> Option<Self> {
        if jinja.contains("<|im_start|>") {
            return Some(ChatTemplate::ChatMl { default_system: default_system(jinja) });
        }
        if jinja.contains("[INST]") && jinja.contains("<<SYS>>") {
            return Some(ChatTemplate::Llama2);
        }
        None
    }
}

/// The literal system prompt a ChatML template inserts when the first message is not a system
/// message (`'<|im_start|>system\n...<|im_end|>'` inside a `!= 'system'` branch).
fn default_system(jinja: &str) -> Option<String> {
    if !jinja.contains("!= 'system'") && !jinja.contains("!= \"system\"") {
        return None;
    }
    let start = jinja.find("<|im_start|>system")? + "<|im_start|>system".len();
    let rest = &jinja[start..];
    let rest = rest.strip_prefix("\\n").or_else(|| rest.strip_prefix('\n'))?;
    let end = rest.find("<|im_end|>")?;
    let text = &rest[..end];
    // Only plain literals: a template expression here means the prompt is not fixed.
    (!text.contains("{{") && !text.contains('\'')).then(|| text.to_string())
}

/// Render `messages` in `kind`'s format; `add_generation_prompt` opens the assistant's turn.
/// Errors (naming the message) on roles the format cannot express.
pub fn apply_chat_template(
    kind: &ChatTemplate,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
) -> Result<String> {
    let origin = Path::new("<chat template>");
    let mut out = String::new();
    match kind {
        ChatTemplate::ChatMl { default_system } => {
            if let Some(sys) = default_system {
                if messages.first().map(|m| m.role.as_str()) != Some("system") {
                    out.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
                }
            }
            for m in messages {
                out.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content));
            }
            if add_generation_prompt {
                out.push_str("<|im_start|>assistant\n");
            }
        }
        ChatTemplate::Llama2 => {
            let (system, rest) = match messages.split_first() {
                Some((first, rest)) if first.role == "system" => (Some(first.content.trim()), rest),
                _ => (None, messages),
            };
            for (i, m) in rest.iter().enumerate() {
                let expected = if i % 2 == 0 { "user" } else { "assistant" };
                if m.role != expected {
                    let msg = format!(
                        "message {i} has role '{}', Llama-2 needs user/assistant turns alternating from user",
                        m.role
                    );
                    return Err(Error::config(origin, "role", msg));
                }
                if i % 2 == 0 {
                    let content = match (i, system) {
                        (0, Some(sys)) => {
                            format!("<<SYS>>\n{sys}\n<</SYS>>\n\n{}", m.content.trim())
                        }
                        _ => m.content.trim().to_string(),
                    };
                    out.push_str(&format!("<s>[INST] {content} [/INST]"));
                } else {
                    out.push_str(&format!(" {} </s>", m.content.trim()));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smollm2_prompt_matches_assets_md() {
        let msgs = [ChatMessage::new("user", "What is the capital of France?")];
        let s = apply_chat_template(&ChatTemplate::smollm2(), &msgs, true).unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn llama2_format() {
        let msgs = [
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello."),
            ChatMessage::new("user", "Bye"),
        ];
        let s = apply_chat_template(&ChatTemplate::Llama2, &msgs, true).unwrap();
        assert_eq!(s, "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] Bye [/INST]");
        let bad = [ChatMessage::new("assistant", "x")];
        assert!(apply_chat_template(&ChatTemplate::Llama2, &bad, true).is_err());
    }

    #[test]
    fn detect_reads_the_default_system_prompt() {
        let jinja = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are X<|im_end|>\n' }}{% endif %}{% endfor %}";
        assert_eq!(
            ChatTemplate::detect(jinja),
            Some(ChatTemplate::ChatMl { default_system: Some("You are X".into()) })
        );
        assert_eq!(ChatTemplate::detect("[INST] <<SYS>>"), Some(ChatTemplate::Llama2));
        assert_eq!(ChatTemplate::detect("{{ messages }}"), None);
    }
}
