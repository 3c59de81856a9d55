"""Evaluation stage (`eval_scores`): completions and test loss of the base model and of an
adapter, their scores, the content-addressed cache of results, and the promotion decision.

    generation  greedy completions and test loss, in-process or through mlx_lm.server
    metrics     exact match and edit similarity of completions (CrossCodeEval / RepoBench)
    humaneval   HumanEval pass@1: prompts, code extraction, sandboxed scoring
    sandbox     running untrusted generated code in a throwaway child process
    cache       the content-addressed cache of evaluation results
    evaluate    evaluating one model at a time, and the promotion decision
"""
