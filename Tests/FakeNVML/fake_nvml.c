// A stand-in for libnvidia-ml.so.1, for tests on machines without a GPU. It exports the NVML entry
// points allotd uses, with answers read from the file named by $FAKE_NVML_FILE on every call, so a test
// can change them while allotd runs. Lines of that file:
//   driver VERSION                 the driver version
//   init_error CODE                nvmlInit_v2 fails with CODE
//   gpu INDEX UUID MEMORY_MIB NAME…  one GPU (NAME is the rest of the line)
//   lost INDEX                     the GPU has fallen off the bus (NVML_ERROR_GPU_IS_LOST)
//   ecc INDEX COUNT                volatile uncorrected ECC errors
//   xid INDEX CODE                 an XID event (each line is delivered once)
//   mig INDEX                      the GPU supports MIG (NVIDIA's A100/H100 placements)
// MIG state (mode, GPU and compute instances) lives in $FAKE_NVML_FILE.mig, written by the MIG calls: it
// outlives the process that made it, as instances outlive allotd (not a reboot: delete the file).
#include "fake_nvml.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_GPUS 64
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_TIMEOUT 10
#define NVML_ERROR_GPU_IS_LOST 15
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_IN_USE 19
#define NVML_ERROR_INSUFFICIENT_RESOURCES 23
#define NVML_ERROR_UNKNOWN 999

// Handles: a GPU is its index + 1; a MIG device, GPU instance and compute instance encode the GPU and the
// GPU instance's id above these bases.
#define MIG_DEVICE_BASE 0x1000
#define GI_BASE 0x100000
#define CI_BASE 0x200000

struct gpu {
    int present, lost, mig_capable;
    char uuid[96], name[96];
    unsigned long long memory_mib, ecc;
};

struct world {
    char driver[64];
    int init_error, count;
    struct gpu gpus[MAX_GPUS];
    int xid_gpu[256], xid_code[256], xids;
};

static int initialized;
static int delivered;  // XID lines already handed out

static void load(struct world *w) {
    memset(w, 0, sizeof *w);
    strcpy(w->driver, "0.0.fake");
    const char *path = getenv("FAKE_NVML_FILE");
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        int i, n;
        unsigned long long v;
        char uuid[96];
        if (sscanf(line, "driver %63s", w->driver) == 1) continue;
        if (sscanf(line, "init_error %d", &w->init_error) == 1) continue;
        if (sscanf(line, "gpu %d %95s %llu %n", &i, uuid, &v, &n) == 3 && i >= 0 && i < MAX_GPUS) {
            w->gpus[i].present = 1;
            strcpy(w->gpus[i].uuid, uuid);
            w->gpus[i].memory_mib = v;
            snprintf(w->gpus[i].name, sizeof w->gpus[i].name, "%s", line + n);
            if (i + 1 > w->count) w->count = i + 1;
            continue;
        }
        if (sscanf(line, "mig %d", &i) == 1 && i >= 0 && i < MAX_GPUS) { w->gpus[i].mig_capable = 1; continue; }
        if (sscanf(line, "lost %d", &i) == 1 && i >= 0 && i < MAX_GPUS) { w->gpus[i].lost = 1; continue; }
        if (sscanf(line, "ecc %d %llu", &i, &v) == 2 && i >= 0 && i < MAX_GPUS) { w->gpus[i].ecc = v; continue; }
        if (sscanf(line, "xid %d %d", &i, &n) == 2 && w->xids < 256) {
            w->xid_gpu[w->xids] = i;
            w->xid_code[w->xids] = n;
            w->xids++;
        }
    }
    fclose(f);
}

static int device(nvmlDevice_t d, struct world *w, struct gpu **g) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    long i = (long)(intptr_t)d - 1;
    load(w);
    if (i < 0 || i >= w->count || !w->gpus[i].present) return NVML_ERROR_INVALID_ARGUMENT;
    *g = &w->gpus[i];
    return (*g)->lost ? NVML_ERROR_GPU_IS_LOST : NVML_SUCCESS;
}

static int copy(char *out, unsigned int size, const char *s) {
    if (strlen(s) + 1 > size) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(out, s);
    return NVML_SUCCESS;
}

int nvmlInit_v2(void) {
    struct world w;
    load(&w);
    if (w.init_error) return w.init_error;
    initialized = 1;
    return NVML_SUCCESS;
}

int nvmlShutdown(void) {
    initialized = 0;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(int result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case 9: return "Driver Not Loaded";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

int nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    struct world w;
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    load(&w);
    return copy(version, length, w.driver);
}

int nvmlDeviceGetCount_v2(unsigned int *count) {
    struct world w;
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    load(&w);
    *count = (unsigned int)w.count;
    return NVML_SUCCESS;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    struct world w;
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    load(&w);
    if (index >= (unsigned int)w.count || !w.gpus[index].present) return NVML_ERROR_INVALID_ARGUMENT;
    *device = (nvmlDevice_t)(intptr_t)(index + 1);
    return w.gpus[index].lost ? NVML_ERROR_GPU_IS_LOST : NVML_SUCCESS;
}

static int mig_uuid(nvmlDevice_t d, char *uuid, unsigned int length);

int nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) {
    struct world w;
    struct gpu *g;
    if ((intptr_t)d >= MIG_DEVICE_BASE) return mig_uuid(d, uuid, length);
    int rc = device(d, &w, &g);
    return rc ? rc : copy(uuid, length, g->uuid);
}

int nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) {
    struct world w;
    struct gpu *g;
    int rc = device(d, &w, &g);
    return rc ? rc : copy(name, length, g->name);
}

int nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *memory) {
    struct world w;
    struct gpu *g;
    int rc = device(d, &w, &g);
    if (rc) return rc;
    memory->total = g->memory_mib << 20;
    memory->used = 0;
    memory->free = memory->total;
    return NVML_SUCCESS;
}

int nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, int errorType, int counterType, unsigned long long *count) {
    struct world w;
    struct gpu *g;
    int rc = device(d, &w, &g);
    if (rc) return rc;
    // Uncorrected (1), volatile (0) only.
    *count = (errorType == 1 && counterType == 0) ? g->ecc : 0;
    return NVML_SUCCESS;
}

int nvmlEventSetCreate(nvmlEventSet_t *set) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    *set = (nvmlEventSet_t)(intptr_t)1;
    return NVML_SUCCESS;
}

int nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long types, nvmlEventSet_t set) {
    struct world w;
    struct gpu *g;
    (void)types;
    (void)set;
    return device(d, &w, &g);
}

int nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
    struct world w;
    (void)set;
    (void)timeoutms;
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    load(&w);
    if (delivered >= w.xids) return NVML_ERROR_TIMEOUT;
    data->device = (nvmlDevice_t)(intptr_t)(w.xid_gpu[delivered] + 1);
    data->eventType = 0x8;  // nvmlEventTypeXidCriticalError
    data->eventData = (unsigned long long)w.xid_code[delivered];
    data->gpuInstanceId = 0xFFFFFFFF;
    data->computeInstanceId = 0xFFFFFFFF;
    delivered++;
    return NVML_SUCCESS;
}

int nvmlEventSetFree(nvmlEventSet_t set) {
    (void)set;
    return NVML_SUCCESS;
}

// MARK: MIG

struct instance {
    int gpu, id, profile, start, size, ci;
};

struct mig_state {
    int mode[MAX_GPUS];
    struct instance gi[MAX_GPUS * 8];
    int count;
};

static void mig_path(char *out, size_t n) {
    const char *path = getenv("FAKE_NVML_FILE");
    snprintf(out, n, "%s.mig", path ? path : "/nonexistent");
}

static void mig_load(struct mig_state *m) {
    memset(m, 0, sizeof *m);
    char path[600], line[256];
    mig_path(path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        int g, v;
        struct instance x;
        if (sscanf(line, "mode %d %d", &g, &v) == 2 && g >= 0 && g < MAX_GPUS) m->mode[g] = v;
        else if (sscanf(line, "gi %d %d %d %d %d %d", &x.gpu, &x.id, &x.profile, &x.start, &x.size, &x.ci) == 6
                 && m->count < MAX_GPUS * 8)
            m->gi[m->count++] = x;
    }
    fclose(f);
}

static int mig_save(const struct mig_state *m) {
    char path[600], tmp[620];
    mig_path(path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return NVML_ERROR_UNKNOWN;
    for (int g = 0; g < MAX_GPUS; g++)
        if (m->mode[g]) fprintf(f, "mode %d %d\n", g, m->mode[g]);
    for (int i = 0; i < m->count; i++) {
        const struct instance *x = &m->gi[i];
        fprintf(f, "gi %d %d %d %d %d %d\n", x->gpu, x->id, x->profile, x->start, x->size, x->ci);
    }
    fclose(f);
    return rename(tmp, path) == 0 ? NVML_SUCCESS : NVML_ERROR_UNKNOWN;
}

// NVML's GPU instance profiles: id, compute slices, memory slices (the placement's size), valid starts.
static const struct {
    int id, compute, size, starts;  // starts: bit i set when an instance may start at memory slice i
} profiles[] = {
    {0, 1, 1, 0x7F}, {9, 1, 2, 0x55}, {1, 2, 2, 0x15}, {2, 3, 4, 0x11}, {3, 4, 4, 0x01}, {4, 7, 8, 0x01},
};

static int profile_index(unsigned int id) {
    for (int i = 0; i < (int)(sizeof profiles / sizeof profiles[0]); i++)
        if (profiles[i].id == (int)id) return i;
    return -1;
}

static int mig_gpu(nvmlDevice_t d, struct world *w, struct gpu **g) {
    int rc = device(d, w, g);
    if (rc) return rc;
    return (*g)->mig_capable ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}

// A MIG-capable GPU's index and the MIG state, for a MIG call on device `d`.
static int mig_open(nvmlDevice_t d, struct mig_state *m, int *gpu) {
    struct world w;
    struct gpu *g;
    int rc = mig_gpu(d, &w, &g);
    if (rc) return rc;
    mig_load(m);
    *gpu = (int)(intptr_t)d - 1;
    return NVML_SUCCESS;
}

static int find(const struct mig_state *m, int gpu, int id) {
    for (int i = 0; i < m->count; i++)
        if (m->gi[i].gpu == gpu && m->gi[i].id == id) return i;
    return -1;
}

int nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    struct mig_state m;
    int gpu;
    int rc = mig_open(d, &m, &gpu);
    if (rc) return rc;
    *current = *pending = (unsigned int)m.mode[gpu];
    return NVML_SUCCESS;
}

int nvmlDeviceSetMigMode(nvmlDevice_t d, unsigned int mode, int *activationStatus) {
    struct mig_state m;
    int gpu;
    int rc = mig_open(d, &m, &gpu);
    if (rc) return rc;
    // The mode changes only on an idle GPU: no instance may exist.
    for (int i = 0; i < m.count; i++)
        if (m.gi[i].gpu == gpu) return *activationStatus = NVML_ERROR_IN_USE, NVML_ERROR_IN_USE;
    m.mode[gpu] = mode ? 1 : 0;
    *activationStatus = NVML_SUCCESS;
    return mig_save(&m);
}

int nvmlDeviceGetGpuInstanceProfileInfo(nvmlDevice_t d, unsigned int profile, nvmlGpuInstanceProfileInfo_t *info) {
    struct world w;
    struct gpu *g;
    int rc = mig_gpu(d, &w, &g);
    if (rc) return rc;
    int p = profile_index(profile);
    if (p < 0) return NVML_ERROR_NOT_SUPPORTED;
    memset(info, 0, sizeof *info);
    info->id = (unsigned int)profiles[p].id;
    info->sliceCount = (unsigned int)profiles[p].compute;
    info->instanceCount = 7 / (unsigned int)profiles[p].compute;
    info->multiprocessorCount = 16 * (unsigned int)profiles[p].compute;
    info->memorySizeMB = g->memory_mib * (unsigned long long)profiles[p].size / 8;
    return NVML_SUCCESS;
}

int nvmlDeviceCreateGpuInstanceWithPlacement(nvmlDevice_t d, unsigned int profileId,
    const nvmlGpuInstancePlacement_t *placement, nvmlGpuInstance_t *gpuInstance) {
    struct mig_state m;
    int gpu;
    int rc = mig_open(d, &m, &gpu);
    if (rc) return rc;
    int p = profile_index(profileId);
    if (!m.mode[gpu]) return NVML_ERROR_NOT_SUPPORTED;  // MIG mode is off
    if (p < 0 || placement->start > 7 || !(profiles[p].starts & (1 << placement->start))
        || placement->size != (unsigned int)profiles[p].size)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int want = ((1u << placement->size) - 1) << placement->start, used = 0;
    int id = 1;
    for (int i = 0; i < m.count; i++) {
        if (m.gi[i].gpu != gpu) continue;
        used |= ((1u << m.gi[i].size) - 1) << m.gi[i].start;
        if (m.gi[i].id >= id) id = m.gi[i].id + 1;
    }
    if (used & want) return NVML_ERROR_INSUFFICIENT_RESOURCES;
    m.gi[m.count++] = (struct instance){gpu, id, profiles[p].id, (int)placement->start, profiles[p].size, 0};
    rc = mig_save(&m);
    if (!rc) *gpuInstance = (nvmlGpuInstance_t)(intptr_t)(GI_BASE + gpu * 64 + id);
    return rc;
}

int nvmlDeviceGetGpuInstances(nvmlDevice_t d, unsigned int profileId, nvmlGpuInstance_t *gpuInstances,
    unsigned int *count) {
    struct mig_state m;
    int gpu;
    int rc = mig_open(d, &m, &gpu);
    if (rc) return rc;
    unsigned int n = 0;
    for (int i = 0; i < m.count; i++)
        if (m.gi[i].gpu == gpu && m.gi[i].profile == (int)profileId) {
            if (gpuInstances) gpuInstances[n] = (nvmlGpuInstance_t)(intptr_t)(GI_BASE + gpu * 64 + m.gi[i].id);
            n++;
        }
    *count = n;
    return NVML_SUCCESS;
}

static int instance(intptr_t handle, intptr_t base, struct mig_state *m) {
    if (!initialized) return -1;
    intptr_t v = handle - base;
    mig_load(m);
    return v < 0 || v >= MAX_GPUS * 64 ? -1 : find(m, (int)(v / 64), (int)(v % 64));
}

int nvmlGpuInstanceGetInfo(nvmlGpuInstance_t gi, nvmlGpuInstanceInfo_t *info) {
    struct mig_state m;
    int i = instance((intptr_t)gi, GI_BASE, &m);
    if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
    info->device = (nvmlDevice_t)(intptr_t)(m.gi[i].gpu + 1);
    info->id = (unsigned int)m.gi[i].id;
    info->profileId = (unsigned int)m.gi[i].profile;
    info->placement.start = (unsigned int)m.gi[i].start;
    info->placement.size = (unsigned int)m.gi[i].size;
    return NVML_SUCCESS;
}

int nvmlGpuInstanceGetComputeInstanceProfileInfo(nvmlGpuInstance_t gi, unsigned int profile,
    unsigned int engProfile, nvmlComputeInstanceProfileInfo_t *info) {
    struct mig_state m;
    int i = instance((intptr_t)gi, GI_BASE, &m);
    (void)engProfile;
    if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
    // Compute instance profiles 0–4: 1, 2, 3, 4, 7 slices; only one that fills the GPU instance is offered.
    static const int slices[] = {1, 2, 3, 4, 7};
    int p = profile_index((unsigned int)m.gi[i].profile);
    if (profile > 4 || slices[profile] != profiles[p].compute) return NVML_ERROR_NOT_SUPPORTED;
    memset(info, 0, sizeof *info);
    info->id = profile;
    info->sliceCount = (unsigned int)slices[profile];
    info->instanceCount = 1;
    return NVML_SUCCESS;
}

int nvmlGpuInstanceCreateComputeInstance(nvmlGpuInstance_t gi, unsigned int profileId,
    nvmlComputeInstance_t *computeInstance) {
    struct mig_state m;
    int i = instance((intptr_t)gi, GI_BASE, &m);
    if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
    (void)profileId;
    if (m.gi[i].ci) return NVML_ERROR_INSUFFICIENT_RESOURCES;
    m.gi[i].ci = 1;
    int rc = mig_save(&m);
    if (!rc) *computeInstance = (nvmlComputeInstance_t)(intptr_t)(CI_BASE + m.gi[i].gpu * 64 + m.gi[i].id);
    return rc;
}

int nvmlGpuInstanceGetComputeInstances(nvmlGpuInstance_t gi, unsigned int profileId,
    nvmlComputeInstance_t *computeInstances, unsigned int *count) {
    struct mig_state m;
    int i = instance((intptr_t)gi, GI_BASE, &m);
    (void)profileId;
    if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
    *count = (unsigned int)m.gi[i].ci;
    if (m.gi[i].ci && computeInstances)
        computeInstances[0] = (nvmlComputeInstance_t)(intptr_t)(CI_BASE + m.gi[i].gpu * 64 + m.gi[i].id);
    return NVML_SUCCESS;
}

int nvmlComputeInstanceDestroy(nvmlComputeInstance_t ci) {
    struct mig_state m;
    int i = instance((intptr_t)ci, CI_BASE, &m);
    if (i < 0 || !m.gi[i].ci) return NVML_ERROR_INVALID_ARGUMENT;
    m.gi[i].ci = 0;
    return mig_save(&m);
}

int nvmlGpuInstanceDestroy(nvmlGpuInstance_t gi) {
    struct mig_state m;
    int i = instance((intptr_t)gi, GI_BASE, &m);
    if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
    if (m.gi[i].ci) return NVML_ERROR_IN_USE;
    m.gi[i] = m.gi[--m.count];
    return mig_save(&m);
}

int nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t d, unsigned int *count) {
    struct world w;
    struct gpu *g;
    int rc = mig_gpu(d, &w, &g);
    if (rc) return rc;
    *count = 7;
    return NVML_SUCCESS;
}

// MIG device i of a GPU: its i-th GPU instance (by id) that has a compute instance.
int nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int index, nvmlDevice_t *migDevice) {
    struct mig_state m;
    int gpu;
    int rc = mig_open(d, &m, &gpu);
    if (rc) return rc;
    unsigned int n = 0;
    for (int id = 1; id < 64; id++) {
        int i = find(&m, gpu, id);
        if (i < 0 || !m.gi[i].ci) continue;
        if (n++ == index) {
            *migDevice = (nvmlDevice_t)(intptr_t)(MIG_DEVICE_BASE + gpu * 64 + id);
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

int nvmlDeviceGetGpuInstanceId(nvmlDevice_t d, unsigned int *id) {
    intptr_t v = (intptr_t)d - MIG_DEVICE_BASE;
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (v < 0) return NVML_ERROR_NOT_SUPPORTED;  // not a MIG device
    *id = (unsigned int)(v % 64);
    return NVML_SUCCESS;
}

static int mig_uuid(nvmlDevice_t d, char *uuid, unsigned int length) {
    struct world w;
    struct mig_state m;
    intptr_t v = (intptr_t)d - MIG_DEVICE_BASE;
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    load(&w);
    mig_load(&m);
    int gpu = (int)(v / 64), id = (int)(v % 64);
    if (gpu >= MAX_GPUS || find(&m, gpu, id) < 0) return NVML_ERROR_INVALID_ARGUMENT;
    // Real MIG UUIDs are opaque; this one names the GPU and the GPU instance, for tests to read.
    char text[160];
    snprintf(text, sizeof text, "MIG-%s-gi%d", w.gpus[gpu].uuid + (strncmp(w.gpus[gpu].uuid, "GPU-", 4) ? 0 : 4), id);
    return copy(uuid, length, text);
}
