/*
 * Cancel scopes.  Scopes form one tree per runtime: inside a task each
 * scope's parent is the scope it was opened in, and a task's outermost
 * scope has for parent the scope of the nursery it was spawned into (or
 * the runtime's root scope).  A task is cancelled when a scope on its
 * path to the root, below the first shield, is cancelled: a walk up at
 * each checkpoint.  Cancelling walks the subtree, waking the tasks that
 * own scopes in it so that they re-evaluate.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "rt.h"

void lahja_scope_init(struct lahja_scope *s, struct lahja_scope *parent,
                      struct lahja_task *t, lahja_time_t deadline, unsigned flags)
{
    s->parent = parent;
    lahja_list_init(&s->children);
    s->sibling.prev = s->sibling.next = NULL;
    if (parent != NULL)
        lahja_list_push_back(&parent->children, &s->sibling);
    s->task = t;
    s->deadline = deadline;
    s->shield = (flags & LAHJA_SCOPE_SHIELD) != 0;
    s->cancelled = 0;
    s->timed_out = 0;
}

void lahja_scope_unlink(struct lahja_scope *s)
{
    lahja_list_remove(&s->sibling);
}

int lahja_scope_status(struct lahja_scope *s, lahja_time_t now, lahja_time_t *deadline)
{
    for (; s != NULL; s = s->parent) {
        if (!s->cancelled && s->deadline <= now)
            lahja_scope_cancel_as(s, 1);
        if (s->cancelled)
            return s->timed_out ? -ETIMEDOUT : -ECANCELED;
        if (deadline != NULL && s->deadline < *deadline)
            *deadline = s->deadline;
        if (s->shield)
            break;
    }
    return 0;
}

/* The first child of `p`, starting at link `from`, that is not shielded. */
static struct lahja_scope *next_unshielded(struct lahja_scope *p, lahja_link_t *from)
{
    for (lahja_link_t *l = from; l != &p->children; l = l->next) {
        struct lahja_scope *c = lahja_container_of(l, struct lahja_scope, sibling);
        if (!c->shield)
            return c;
    }
    return NULL;
}

/* The deepest first-unshielded descendant of `s` (s itself if none). */
static struct lahja_scope *descend(struct lahja_scope *s)
{
    struct lahja_scope *c;
    while ((c = next_unshielded(s, s->children.next)) != NULL)
        s = c;
    return s;
}

/*
 * Wakes every task owning a scope in the subtree of `top`, not entering
 * shielded scopes.  Post-order, so tasks are queued leaves first: a child
 * task runs its cancellation before the task that spawned it.  Iterative
 * (parent pointers), so that a deep tree cannot overflow the stack of the
 * task doing the cancelling.  Only queues tasks; the tree does not change
 * under the walk.
 */
static void wake_inside(struct lahja_scope *top)
{
    struct lahja_scope *s = descend(top);
    for (;;) {
        if (s->task != NULL)
            lahja_task_recheck(s->task);
        if (s == top)
            return;
        struct lahja_scope *sib = next_unshielded(s->parent, s->sibling.next);
        s = sib != NULL ? descend(sib) : s->parent;
    }
}

void lahja_scope_cancel_as(struct lahja_scope *s, int timed_out)
{
    if (s->cancelled)
        return;
    s->cancelled = 1;
    s->timed_out = timed_out != 0;
    wake_inside(s);
}

void lahja_scope_push(struct lahja_task *t, struct lahja_scope *s, lahja_time_t deadline,
                      unsigned flags)
{
    lahja_scope_init(s, t->scope, t, deadline, flags);
    t->scope = s;
}

void lahja_scope_pop(struct lahja_task *t, struct lahja_scope *s)
{
    assert(t->scope == s && "scopes must be closed innermost first");
    assert(lahja_list_empty(&s->children) && "scope closed with a nested scope or task alive");
    t->scope = s->parent;
    lahja_scope_unlink(s);
}

int lahja_scope_open(lahja_time_t deadline, unsigned flags, lahja_scope_t **out)
{
    struct lahja_task *t = lahja_tls_task;
    if (out == NULL)
        return -EINVAL;
    if (t == NULL)
        return LAHJA_ENOTASK;
    struct lahja_scope *s = malloc(sizeof *s);
    if (s == NULL)
        return -ENOMEM;
    lahja_scope_push(t, s, deadline, flags);
    *out = s;
    return 0;
}

void lahja_scope_cancel(lahja_scope_t *s)
{
    if (s != NULL)
        lahja_scope_cancel_as(s, 0);
}

void lahja_scope_set_deadline(lahja_scope_t *s, lahja_time_t deadline)
{
    s->deadline = deadline;
    wake_inside(s); /* waiting tasks re-arm their timers */
}

void lahja_scope_set_shield(lahja_scope_t *s, int shield)
{
    int was = s->shield;
    s->shield = shield != 0;
    if (was && !s->shield) {
        /* What the shield hid may now apply: let the tasks inside look. */
        s->shield = 0;
        wake_inside(s);
    }
}

int lahja_scope_close(lahja_scope_t *s)
{
    struct lahja_task *t = lahja_tls_task;
    assert(t != NULL && s != NULL);
    int rc = s->cancelled ? (s->timed_out ? -ETIMEDOUT : -ECANCELED) : 0;
    lahja_scope_pop(t, s);
    free(s);
    return rc;
}
