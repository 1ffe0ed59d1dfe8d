//! Turning chat messages into the project's prompt text per task, so a
//! chat-completions request reaches a policy in the format it was trained on.

use anyhow::{bail, Result};

use crate::protocol::ChatMessage;

/// How a task's prompts look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptFormat {
    /// HH-RLHF: `\n\nHuman: ...\n\nAssistant: ...` turns, ending with
    /// `\n\nAssistant:` for the model to continue.
    Dialogue,
    /// TL;DR, WebGPT, APPS: the user message is the prompt, verbatim.
    Plain,
}

impl PromptFormat {
    /// The format of a pipeline task (`hh-rlhf`, `tldr`, `webgpt`, `apps`).
    pub fn for_task(task: &str) -> Result<Self> {
        match task {
            "hh-rlhf" => Ok(Self::Dialogue),
            "tldr" | "webgpt" | "apps" => Ok(Self::Plain),
            other => bail!("unknown task {other:?}: expected hh-rlhf, tldr, webgpt or apps"),
        }
    }
}

/// Renders `messages` as a prompt. The last message must come from the user.
/// Dialogue: a system message becomes leading text before the first turn.
/// Plain: system messages are ignored and exactly one user message is taken.
pub fn render_prompt(format: PromptFormat, messages: &[ChatMessage]) -> Result<String> {
    match messages.last() {
        None => bail!("no messages to render"),
        Some(last) if last.role != "user" => {
            bail!(
                "the last message must be from the user, not {:?}",
                last.role
            )
        }
        Some(_) => {}
    }
    match format {
        PromptFormat::Dialogue => {
            let mut prompt = String::new();
            for (i, m) in messages.iter().enumerate() {
                match m.role.as_str() {
                    "system" => prompt.push_str(m.content.trim()),
                    "user" => {
                        prompt.push_str("\n\nHuman: ");
                        prompt.push_str(m.content.trim());
                    }
                    "assistant" => {
                        prompt.push_str("\n\nAssistant: ");
                        prompt.push_str(m.content.trim());
                    }
                    other => bail!("messages[{i}] has unknown role {other:?}"),
                }
            }
            prompt.push_str("\n\nAssistant:");
            Ok(prompt)
        }
        PromptFormat::Plain => {
            let turns: Vec<&ChatMessage> = messages.iter().filter(|m| m.role != "system").collect();
            if turns.len() != 1 {
                bail!(
                    "this task takes a single user message, got {} user/assistant messages",
                    turns.len()
                );
            }
            Ok(turns[0].content.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialogue_renders_hh_rlhf_turns() {
        let messages = [
            ChatMessage::user("What is a good name for a cat?"),
            ChatMessage::assistant("How about Miso?"),
            ChatMessage::user("Another one? "),
        ];
        assert_eq!(
            render_prompt(PromptFormat::Dialogue, &messages).unwrap(),
            "\n\nHuman: What is a good name for a cat?\n\nAssistant: How about Miso?\n\nHuman: Another one?\n\nAssistant:"
        );
        let single = [ChatMessage::user("Hi")];
        assert_eq!(
            render_prompt(PromptFormat::Dialogue, &single).unwrap(),
            "\n\nHuman: Hi\n\nAssistant:"
        );
    }

    #[test]
    fn plain_takes_the_user_message_verbatim() {
        let post = "SUBREDDIT: r/test\n\nTITLE: t\n\nPOST: p\n\nTL;DR:";
        let messages = [ChatMessage::system("be brief"), ChatMessage::user(post)];
        assert_eq!(render_prompt(PromptFormat::Plain, &messages).unwrap(), post);
        let two = [ChatMessage::user("a"), ChatMessage::user("b")];
        assert!(render_prompt(PromptFormat::Plain, &two).is_err());
    }

    #[test]
    fn rejects_what_cannot_be_a_prompt() {
        assert_eq!(
            render_prompt(PromptFormat::Dialogue, &[])
                .unwrap_err()
                .to_string(),
            "no messages to render"
        );
        let ends_with_assistant = [ChatMessage::user("q"), ChatMessage::assistant("a")];
        assert_eq!(
            render_prompt(PromptFormat::Dialogue, &ends_with_assistant)
                .unwrap_err()
                .to_string(),
            "the last message must be from the user, not \"assistant\""
        );
        let tool = [ChatMessage::new("tool", "x"), ChatMessage::user("q")];
        assert!(render_prompt(PromptFormat::Dialogue, &tool).is_err());
        assert_eq!(PromptFormat::for_task("tldr").unwrap(), PromptFormat::Plain);
        assert_eq!(
            PromptFormat::for_task("hh-rlhf").unwrap(),
            PromptFormat::Dialogue
        );
        assert!(PromptFormat::for_task("nope").is_err());
    }
}
