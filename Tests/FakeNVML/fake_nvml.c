// A stand-in for libnvidia-ml.so.1, for tests on machines without a GPU. It exports the NVML entry
// points allotd uses, with answers read from the file named by $FAKE_NVML_FILE on every call, so a test
// can change them while allotd runs. Lines of that file:
//   driver VERSION                 the driver version
//   init_error CODE                nvmlInit_v2 fails with CODE
//   gpu INDEX UUID MEMORY_MIB NAME…  one GPU (NAME is the rest of the line)
//   lost INDEX                     the GPU has fallen off the bus (NVML_ERROR_GPU_IS_LOST)
//   ecc INDEX COUNT                volatile uncorrected ECC errors
//   xid INDEX CODE                 an XID event (each line is delivered once)
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
#define NVML_ERROR_UNKNOWN 999

struct gpu {
    int present, lost;
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

int nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) {
    struct world w;
    struct gpu *g;
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
