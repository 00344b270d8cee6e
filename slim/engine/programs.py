"""The train and eval programs of one model, with the optimizer and the pruning plans so far.

`ProgramSet` owns them. Pruning plans are applied to both and to the scope; on
several cards the train program (whose fleet all-reduce ops the pruning engine
does not analyse) is rebuilt from the model with every plan applied before its
optimizer and collective ops are added, so the engine only ever sees
single-card programs.
"""

TRAIN_FEEDS = ("image", "gt_box", "gt_label", "gt_score")
LOSS_FETCHES = ("loss", "loss_0", "loss_1", "loss_2")


def loss_fetches(train):
    """Names of the losses a train step fetches and logs: LOSS_FETCHES, then every other
    `loss_*` fetch of the train program (what build hooks add, e.g. loss_distill)."""
    return list(LOSS_FETCHES) + [name for name in train.fetches
                                 if name.startswith("loss_") and name not in LOSS_FETCHES]


class ProgramSet:
    """Train + eval programs of `model` with the optimizer, the LR scheduler and the pruning
    plans applied so far.

    Args:
        model: a built YOLOv3 (from `slim.config.create`).
        eval_image_shape: [3, H, W] of the eval program's input.
        optimizer_builder: an OptimizerBuilder config module instance.
        scheduler: the paddle LR scheduler every optimizer built here uses (one object,
            so the schedule continues across rebuilds).
        env: the DistributedEnv; with several workers the train program is fleet-wrapped.
        sync_bn: synchronize batch norm across cards (norm_type sync_bn).
        build_hooks: hooks (`slim.engine.HookBase`) whose `build_train_program` is called on
            every build of the train program, before its optimizer is added.
    """

    def __init__(self, model, eval_image_shape, optimizer_builder, scheduler, env, sync_bn=False,
                 build_hooks=()):
        self.model = model
        self.build_hooks = list(build_hooks)
        self.eval_image_shape = list(eval_image_shape)
        self.optimizer_builder = optimizer_builder
        self.scheduler = scheduler
        self.env = env
        self.sync_bn = sync_bn
        self.plans = []
        self.hooks_add_ops = False  # whether build hooks added ops to the train program
        self._analysed = None  # (plans applied, program) of _analysed_train
        self.train, self.eval = self._build(distributed=env.is_distributed)
        self.startup = self.train.startup

    def _build(self, distributed, with_hooks=True):
        """Fresh programs with every plan so far applied, then (`with_hooks`) what the build
        hooks add, then the optimizer (and, when `distributed`, fleet's collective ops)
        added to the train program."""
        import paddle

        from slim.engine import distributed as distributed_lib
        from slim.engine.optimizer import build_optimizer
        from slim.model import build_eval_program, build_train_program
        from slim.prune import apply_plan
        train = build_train_program(self.model, image_shape=[3, None, None])
        evaluation = build_eval_program(self.model, image_shape=self.eval_image_shape)
        for plan in self.plans:
            apply_plan(plan, [train.program, evaluation.program], scope=None,
                       startup_programs=[train.startup])
        ops_before = len(train.program.global_block().ops)
        for hook in self.build_hooks if with_hooks else ():
            hook.build_train_program(train, train.startup)
        if with_hooks:
            self.hooks_add_ops = len(train.program.global_block().ops) > ops_before
        env = self.env if distributed else distributed_lib.DistributedEnv()
        # A fresh name guard: accumulator names (conv1_weights_velocity_0, learning_rate_0)
        # are the same in every build, so checkpoints load into rebuilt programs.
        with paddle.static.program_guard(train.program, train.startup), \
                paddle.utils.unique_name.guard():
            optimizer = build_optimizer(self.optimizer_builder, self.scheduler)
            distributed_lib.minimize(optimizer, train.fetches["loss"], train.startup, env,
                                     sync_bn=self.sync_bn)
        return train, evaluation

    def plan(self, pruned_params, target_ratio, criterion, scope):
        """A PrunePlan removing `target_ratio` of the FLOPs of the current model (nothing changes).
        The model alone is analysed: what build hooks add (a distillation teacher) is never
        selected, so its plan is the same as without them."""
        from slim.prune import plan_pruning
        return plan_pruning(self._analysed_train().program, scope, pruned_params, target_ratio=target_ratio,
                            criterion=criterion, flops_program=self.eval.program)

    def plan_latency(self, pruned_params, target, criterion, scope):
        """(PrunePlan, predicted latency summary) meeting the LatencyTarget `target` on the
        eval program's input size (slim.prune.latency.plan_for_latency; nothing changes)."""
        from slim.prune.latency import plan_for_latency
        return plan_for_latency(self._analysed_train().program, scope, pruned_params, target,
                                flops_program=self.eval.program, criterion=criterion)

    def _analysed_train(self):
        """The single-card train program of the model alone, with every plan so far applied:
        the train program itself, or (on several cards, or when build hooks add to it) one
        built without them, kept until the next plan applies."""
        if not (self.env.is_distributed or self.hooks_add_ops):
            return self.train
        if self._analysed is None or self._analysed[0] != len(self.plans):
            self._analysed = (len(self.plans), self._build(distributed=False, with_hooks=False)[0])
        return self._analysed[1]

    def apply(self, plan, scope):
        """Prune the programs and every tensor of the plan's groups in `scope` (parameters,
        BN statistics, momentum accumulators)."""
        from slim.prune import apply_plan
        if not self.env.is_distributed:
            apply_plan(plan, [self.train.program, self.eval.program], scope,
                       startup_programs=[self.train.startup])
            self.plans.append(plan)
            return
        analysed_train, analysed_eval = self._build(distributed=False)
        apply_plan(plan, [analysed_train.program, analysed_eval.program], scope)
        self.plans.append(plan)
        self.train, self.eval = self._build(distributed=True)

    def flops(self):
        """FLOPs (MACs per image) of the eval program as it is now."""
        from slim.prune.flops import program_flops
        return program_flops(self.eval.program)

    def params(self):
        """Parameter count of the eval program as it is now."""
        from slim.prune.flops import program_params
        return program_params(self.eval.program)
