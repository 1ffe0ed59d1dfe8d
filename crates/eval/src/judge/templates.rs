//! The judge prompts, one per task. They follow the pairwise GPT-4 protocol
//! of the MA-RLHF paper's evaluation, which adapts the prompts of DPO
//! (Rafailov et al. 2023) and Zheng et al. 2023 ("Judging LLM-as-a-judge"):
//! summaries are judged on relevance, coherence, consistency and fluency and
//! answered with A, B or E on the last line; dialogue and QA answers are
//! judged on helpfulness and answered as JSON with a comparison and a
//! choice. The wording is this project's own.

use super::{JudgeRequest, JudgeTask};

/// A system message that keeps chat models to the format.
pub const SYSTEM_PROMPT: &str = "You are a careful, impartial evaluator of AI-generated text. \
Judge only the quality of the responses, not their order or length, and follow the requested \
answer format exactly.";

/// The user message sent to the judge.
pub fn render(req: &JudgeRequest) -> String {
    let prompt = req.prompt.trim();
    let a = req.response_a.trim();
    let b = req.response_b.trim();
    match req.task {
        JudgeTask::Summary => format!(
            "Two summaries of the same Reddit post follow. Decide which one is the better summary, \
judging four qualities:\n\
- relevance: it keeps the post's important points and leaves out unimportant details;\n\
- coherence: it is well organised and easy to follow;\n\
- consistency: every statement in it is supported by the post, nothing is invented;\n\
- fluency: it is grammatical and reads naturally.\n\n\
Post:\n{prompt}\n\n\
Summary A:\n{a}\n\n\
Summary B:\n{b}\n\n\
First compare the two summaries on these qualities in at most three sentences. Then, on a \
final line of its own, write only one letter: \"A\" if Summary A is better, \"B\" if Summary B \
is better, or \"E\" if they are equally good."
        ),
        JudgeTask::Dialogue => format!(
            "Below is a conversation between a human and an AI assistant, followed by two possible \
next replies from the assistant. Decide which reply is more helpful: it addresses what the human \
actually asked, is accurate, gives a suitable amount of detail, and stays honest and harmless.\n\n\
Conversation:\n{prompt}\n\n\
Response A:\n{a}\n\n\
Response B:\n{b}\n\n\
Reply with one JSON object and nothing else:\n\
{{\"comparison\": \"<one or two sentences comparing the two responses>\", \"choice\": \"A\"}}\n\
where \"choice\" is \"A\" if Response A is more helpful, \"B\" if Response B is more helpful, \
or \"E\" if they are equally helpful."
        ),
        JudgeTask::Qa => format!(
            "Below is a question followed by two answers. Decide which answer is more helpful: it \
answers the question that was asked, is factually correct, is complete without padding, and is \
clearly written.\n\n\
Question:\n{prompt}\n\n\
Answer A:\n{a}\n\n\
Answer B:\n{b}\n\n\
Reply with one JSON object and nothing else:\n\
{{\"comparison\": \"<one or two sentences comparing the two answers>\", \"choice\": \"A\"}}\n\
where \"choice\" is \"A\" if Answer A is more helpful, \"B\" if Answer B is more helpful, or \
\"E\" if they are equally helpful."
        ),
        JudgeTask::Story => format!(
            "Below is the opening of a children's story followed by two continuations. Decide which \
continuation makes the better short story: it is fluent and coherent, brings the story to a proper \
ending, and ties its ending back to what it set up at the start.\n\n\
Opening:\n{prompt}\n\n\
Continuation A:\n{a}\n\n\
Continuation B:\n{b}\n\n\
Reply with one JSON object and nothing else:\n\
{{\"comparison\": \"<one or two sentences comparing the two continuations>\", \"choice\": \"A\"}}\n\
where \"choice\" is \"A\" if Continuation A is better, \"B\" if Continuation B is better, or \
\"E\" if they are equally good."
        ),
    }
}
