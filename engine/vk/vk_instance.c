/* The Vulkan instance: loader (volk), optional Khronos validation layer with
 * a messenger that counts errors, and a caps snapshot of every device.
 *
 * volkInitialize() is process-wide and idempotent; everything else is per
 * instance. Instance-level entry points from volk are loader trampolines, so
 * several instances coexist; device-level calls go through each device's own
 * VolkDeviceTable (vk_device.c). */
#define _GNU_SOURCE
#include "vk_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static pthread_once_t g_volk_once = PTHREAD_ONCE_INIT;
static VkResult g_volk_result = VK_ERROR_INITIALIZATION_FAILED;

#if defined(__SANITIZE_ADDRESS__)
#include <dlfcn.h>
#endif

static void volk_init_once(void)
{
    g_volk_result = volkInitialize();
#if defined(__SANITIZE_ADDRESS__)
    /* Sanitizer builds only: the loader unloads drivers and layers at
     * vkDestroyInstance, and what they keep for the process's life then shows
     * up in LeakSanitizer reports as "<unknown module>", which no suppression
     * can name. Keeping them mapped lets tests/lsan.supp match them. */
    static const char *libs[] = {"libvulkan_lvp.so", "libVkLayer_khronos_validation.so"};
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++)
        dlopen(libs[i], RTLD_LAZY | RTLD_LOCAL | RTLD_NODELETE);
#endif
}

static VKAPI_ATTR VkBool32 VKAPI_CALL
on_validation(VkDebugUtilsMessageSeverityFlagBitsEXT sev, VkDebugUtilsMessageTypeFlagsEXT type,
              const VkDebugUtilsMessengerCallbackDataEXT *data, void *ud)
{
    vkpt_instance *inst = ud;
    (void)type;
    const char *msg = data && data->pMessage ? data->pMessage : "(no message)";
    if (sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
        atomic_fetch_add(&inst->n_validation_errors, 1);
        VKPT_LOGE("validation: %s", msg);
    } else if (sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) {
        if (inst->warnings_fail) atomic_fetch_add(&inst->n_validation_errors, 1);
        VKPT_LOGW("validation: %s", msg);
    } else {
        VKPT_LOGD("validation: %s", msg);
    }
    return VK_FALSE;
}

static bool has_layer(const char *name)
{
    uint32_t n = 0;
    if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || !n) return false;
    VkLayerProperties *props = vkpt_calloc(n, sizeof *props);
    if (!props) return false;
    bool found = false;
    if (vkEnumerateInstanceLayerProperties(&n, props) == VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++)
            if (!strcmp(props[i].layerName, name)) found = true;
    vkpt_free(props);
    return found;
}

static bool has_instance_ext(const char *name)
{
    uint32_t n = 0;
    if (vkEnumerateInstanceExtensionProperties(NULL, &n, NULL) != VK_SUCCESS || !n) return false;
    VkExtensionProperties *props = vkpt_calloc(n, sizeof *props);
    if (!props) return false;
    bool found = false;
    if (vkEnumerateInstanceExtensionProperties(NULL, &n, props) == VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++)
            if (!strcmp(props[i].extensionName, name)) found = true;
    vkpt_free(props);
    return found;
}

int vkpt_instance_create(const vkpt_instance_opts *opts, vkpt_instance **out)
{
    if (!out) return vkpt_fail(VKPT_EINVAL, "vkpt_instance_create: out is NULL");
    *out = NULL;
    pthread_once(&g_volk_once, volk_init_once);
    if (g_volk_result != VK_SUCCESS)
        return vkpt_fail(VKPT_EUNSUPPORTED,
                         "no Vulkan loader found (install libvulkan1 and a driver; on a "
                         "machine without a GPU, mesa-vulkan-drivers provides lavapipe)");

    vkpt_instance *inst = vkpt_calloc(1, sizeof *inst);
    if (!inst) return vkpt_fail(VKPT_ENOMEM, "instance");
    int validate = opts ? opts->validate : -1;
    if (validate < 0) {
        const char *e = getenv("VKPT_VALIDATE");
        validate = e && *e && strcmp(e, "0") != 0;
    }
    inst->warnings_fail = opts && opts->validation_warnings_fail;

    const char *layers[1];
    uint32_t n_layers = 0;
    const char *exts[4];
    uint32_t n_exts = 0;
    if (validate) {
        if (!has_layer("VK_LAYER_KHRONOS_validation")) {
            vkpt_free(inst);
            return vkpt_fail(VKPT_EUNSUPPORTED,
                             "validation requested but VK_LAYER_KHRONOS_validation "
                             "is not installed (Debian: vulkan-validationlayers)");
        }
        layers[n_layers++] = "VK_LAYER_KHRONOS_validation";
        exts[n_exts++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
        inst->validate = true;
    }
    bool portability = has_instance_ext(VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME);
    if (portability) exts[n_exts++] = VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;

    uint32_t api = VK_API_VERSION_1_2;
    if (vkEnumerateInstanceVersion) {
        uint32_t have = 0;
        if (vkEnumerateInstanceVersion(&have) == VK_SUCCESS && have >= VK_API_VERSION_1_3)
            api = VK_API_VERSION_1_3;
    }
    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "vkpt",
        .applicationVersion =
            VK_MAKE_VERSION(VKPT_VERSION_MAJOR, VKPT_VERSION_MINOR, VKPT_VERSION_PATCH),
        .pEngineName = "vkpt",
        .engineVersion =
            VK_MAKE_VERSION(VKPT_VERSION_MAJOR, VKPT_VERSION_MINOR, VKPT_VERSION_PATCH),
        .apiVersion = api,
    };
    VkDebugUtilsMessengerCreateInfoEXT dbg = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = on_validation,
        .pUserData = inst,
    };
    VkInstanceCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pNext = validate ? &dbg : NULL,
        .flags = portability ? VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR : 0,
        .pApplicationInfo = &app,
        .enabledLayerCount = n_layers,
        .ppEnabledLayerNames = layers,
        .enabledExtensionCount = n_exts,
        .ppEnabledExtensionNames = exts,
    };
    VkResult r = vkCreateInstance(&ci, NULL, &inst->inst);
    if (r != VK_SUCCESS) {
        vkpt_free(inst);
        return vkpt_fail(r == VK_ERROR_INCOMPATIBLE_DRIVER ? VKPT_ENODEV : VKPT_EVULKAN,
                         "vkCreateInstance failed: %s", vkpt__vk_result_name(r));
    }
    volkLoadInstanceOnly(inst->inst);
    if (validate) {
        r = vkCreateDebugUtilsMessengerEXT(inst->inst, &dbg, NULL, &inst->messenger);
        if (r != VK_SUCCESS) {
            vkpt_instance_destroy(inst);
            return vkpt_fail(VKPT_EVULKAN, "vkCreateDebugUtilsMessengerEXT: %s",
                             vkpt__vk_result_name(r));
        }
    }

    uint32_t n = 0;
    r = vkEnumeratePhysicalDevices(inst->inst, &n, NULL);
    if (r != VK_SUCCESS || n == 0) {
        vkpt_instance_destroy(inst);
        return vkpt_fail(VKPT_ENODEV, "no Vulkan devices found (on a machine without a GPU, "
                                      "install mesa-vulkan-drivers for lavapipe)");
    }
    inst->pds = vkpt_calloc(n, sizeof *inst->pds);
    inst->caps = vkpt_calloc(n, sizeof *inst->caps);
    if (!inst->pds || !inst->caps) {
        vkpt_instance_destroy(inst);
        return vkpt_fail(VKPT_ENOMEM, "device list");
    }
    r = vkEnumeratePhysicalDevices(inst->inst, &n, inst->pds);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
        vkpt_instance_destroy(inst);
        return vkpt_fail(VKPT_EVULKAN, "vkEnumeratePhysicalDevices: %s", vkpt__vk_result_name(r));
    }
    inst->n_dev = (int)n;
    for (uint32_t i = 0; i < n; i++) vkpt__probe_caps(inst->inst, inst->pds[i], &inst->caps[i]);
    *out = inst;
    return 0;
}

void vkpt_instance_destroy(vkpt_instance *inst)
{
    if (!inst) return;
    if (inst->messenger) vkDestroyDebugUtilsMessengerEXT(inst->inst, inst->messenger, NULL);
    if (inst->inst) vkDestroyInstance(inst->inst, NULL);
    vkpt_free(inst->pds);
    vkpt_free(inst->caps);
    vkpt_free(inst);
}

int vkpt_instance_device_count(const vkpt_instance *inst)
{
    return inst ? inst->n_dev : 0;
}

const vkpt_device_caps *vkpt_instance_caps(const vkpt_instance *inst, int index)
{
    if (!inst || index < 0 || index >= inst->n_dev) return NULL;
    return &inst->caps[index];
}

int vkpt_instance_validation_errors(const vkpt_instance *inst)
{
    return inst ? atomic_load(&inst->n_validation_errors) : 0;
}

bool vkpt_instance_validating(const vkpt_instance *inst)
{
    return inst && inst->validate;
}

/* Parse 32 hex digits (dashes ignored) into 16 bytes. */
static bool parse_uuid(const char *s, uint8_t out[16])
{
    int nd = 0;
    for (; *s; s++) {
        if (*s == '-') continue;
        if (!isxdigit((unsigned char)*s) || nd >= 32) return false;
        int v = isdigit((unsigned char)*s) ? *s - '0' : (tolower((unsigned char)*s) - 'a' + 10);
        if (nd % 2 == 0)
            out[nd / 2] = (uint8_t)(v << 4);
        else
            out[nd / 2] |= (uint8_t)v;
        nd++;
    }
    return nd == 32;
}

int vkpt_instance_find_device(const vkpt_instance *inst, const char *spec)
{
    if (!inst || inst->n_dev == 0) return vkpt_fail(VKPT_ENODEV, "no Vulkan devices");
    if (!spec || !*spec) {
        static const int pref[] = {VKPT_DEVICE_DISCRETE, VKPT_DEVICE_INTEGRATED,
                                   VKPT_DEVICE_VIRTUAL, VKPT_DEVICE_CPU, VKPT_DEVICE_OTHER};
        for (int p = 0; p < 5; p++)
            for (int i = 0; i < inst->n_dev; i++)
                if (inst->caps[i].type == pref[p]) return i;
        return 0;
    }
    char *end = NULL;
    long idx = strtol(spec, &end, 10);
    if (end && *end == 0 && end != spec) {
        if (idx < 0 || idx >= inst->n_dev)
            return vkpt_fail(VKPT_ENODEV,
                             "--device %ld: there are %d devices (0..%d); see `vkpt devices`", idx,
                             inst->n_dev, inst->n_dev - 1);
        return (int)idx;
    }
    uint8_t uuid[16];
    if (parse_uuid(spec, uuid)) {
        for (int i = 0; i < inst->n_dev; i++)
            if (!memcmp(inst->caps[i].uuid, uuid, 16)) return i;
        return vkpt_fail(VKPT_ENODEV, "--device %s: no device has this UUID; see `vkpt devices`",
                         spec);
    }
    for (int i = 0; i < inst->n_dev; i++)
        if (strcasestr(inst->caps[i].name, spec)) return i;
    return vkpt_fail(VKPT_ENODEV, "--device %s: no device name contains this; see `vkpt devices`",
                     spec);
}
