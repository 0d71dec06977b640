"""The LLM layer: grounded reranking, explanations and conversational recommendation.

Everything works over any OpenAI-compatible chat-completions endpoint through the
:class:`LLMClient` protocol, and everything except LLM phrasing also works with no LLM at all
(template explanations, embedding-based critique parsing, the template simulated user).
"""

from genrec.llm.catalog import Attribute, ItemCatalog
from genrec.llm.client import (
    ChatMessage,
    ClientConfig,
    Completion,
    LLMClient,
    LLMError,
    OpenAIClient,
    ResponseCache,
    TokenUsage,
)
from genrec.llm.conversation import (
    ConversationalRecommender,
    ConversationConfig,
    Reply,
    Session,
    SessionState,
)
from genrec.llm.critique import Critique, CritiqueParser
from genrec.llm.embeddings import (
    HashingEncoder,
    SentenceEncoder,
    TextEncoder,
    default_encoder,
    encode_cached,
)
from genrec.llm.explain import ExplainConfig, Explainer, Explanation
from genrec.llm.grounding import Claim, GroundingChecker, GroundingReport
from genrec.llm.matching import ItemMatcher, Match
from genrec.llm.parsing import parse_json_object, parse_list
from genrec.llm.rerank import LLMReranker, RerankConfig, RerankResult, RerankStats
from genrec.llm.simulator import SimulatedUser, SimulationConfig, simulate

__all__ = [
    "Attribute",
    "ChatMessage",
    "Claim",
    "ClientConfig",
    "Completion",
    "ConversationConfig",
    "ConversationalRecommender",
    "Critique",
    "CritiqueParser",
    "ExplainConfig",
    "Explainer",
    "Explanation",
    "GroundingChecker",
    "GroundingReport",
    "HashingEncoder",
    "ItemCatalog",
    "ItemMatcher",
    "LLMClient",
    "LLMError",
    "LLMReranker",
    "Match",
    "OpenAIClient",
    "Reply",
    "RerankConfig",
    "RerankResult",
    "RerankStats",
    "ResponseCache",
    "SentenceEncoder",
    "Session",
    "SessionState",
    "SimulatedUser",
    "SimulationConfig",
    "TextEncoder",
    "TokenUsage",
    "default_encoder",
    "encode_cached",
    "parse_json_object",
    "parse_list",
    "simulate",
]
