/*
 * Intrusive circular doubly linked lists.  A list head is a link whose
 * prev/next point to itself when empty; a node that is in no list has
 * both pointers NULL, so "is it linked?" is one comparison.
 */
#ifndef LAHJA_LIST_H
#define LAHJA_LIST_H

#include <stddef.h>

#include "lahja/runtime.h" /* struct lahja__link */

/* Internal: never exported from the shared library. */
#pragma GCC visibility push(hidden)

typedef struct lahja__link lahja_link_t;

#define lahja_container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static inline void lahja_list_init(lahja_link_t *head)
{
    head->prev = head->next = head;
}

static inline int lahja_list_empty(const lahja_link_t *head)
{
    return head->next == head;
}

static inline int lahja_link_linked(const lahja_link_t *node)
{
    return node->next != NULL;
}

static inline void lahja_list_push_back(lahja_link_t *head, lahja_link_t *node)
{
    node->prev = head->prev;
    node->next = head;
    head->prev->next = node;
    head->prev = node;
}

/* Unlinks a node if it is linked; safe on an unlinked node. */
static inline void lahja_list_remove(lahja_link_t *node)
{
    if (node->next == NULL)
        return;
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = NULL;
}

/* Removes and returns the first node, or NULL if the list is empty. */
static inline lahja_link_t *lahja_list_pop_front(lahja_link_t *head)
{
    lahja_link_t *node = head->next;
    if (node == head)
        return NULL;
    lahja_list_remove(node);
    return node;
}

#define lahja_list_foreach(pos, head) \
    for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)

/* Iteration that tolerates removal of `pos`. */
#define lahja_list_foreach_safe(pos, tmp, head) \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); \
         (pos) = (tmp), (tmp) = (pos)->next)

#pragma GCC visibility pop

#endif /* LAHJA_LIST_H */
